"""Which neurons an experiment ablates, and how results are placed against the controls."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.impact.controls import count, matched_controls, pan_units, relabelled
from pipeline.impact.metrics import against_controls, compare
from pipeline.schema import table_from_rows


def _neurons(spec: dict[str, list[str]]) -> object:
    """spec: layer -> one letter per channel: P (PAN), D (dead), . (other)."""
    rows = [
        {"model_id": "m", "config_id": "c", "layer": layer, "layer_index": i, "channel": ch,
         "is_pan": kind == "P", "dead": kind == "D"}
        for i, (layer, kinds) in enumerate(spec.items())
        for ch, kind in enumerate(kinds)
    ]
    return table_from_rows("neurons", rows)


def test_controls_match_the_pans_layer_by_layer_and_avoid_pans_and_dead() -> None:
    table = _neurons({"a": list("PP..D...."), "b": list("P....."), "c": list("......")})
    pans = pan_units(table)
    assert pans == {"a": [0, 1], "b": [0]}
    draws = [matched_controls(table, pans, seed) for seed in range(20)]
    for units in draws:
        assert {k: len(v) for k, v in units.items()} == {"a": 2, "b": 1}
        assert not set(units["a"]) & {0, 1, 4} and 0 not in units["b"]
    assert len({tuple(map(tuple, d.values())) for d in draws}) > 1  # seeds differ
    assert matched_controls(table, pans, 3) == matched_controls(table, pans, 3)  # and repeat


def test_a_layer_short_of_candidates_borrows_from_the_other_pan_layers() -> None:
    table = _neurons({"a": list("PPP."), "b": list("P.....")})
    units = matched_controls(table, pan_units(table), 0)
    assert count(units) == 4 and units["a"] == [3] and len(units["b"]) == 3


def test_relabelled_marks_exactly_the_given_neurons() -> None:
    table = _neurons({"a": list("P..."), "b": list("....")})
    assert pan_units(relabelled(table, {"b": [2, 3]})) == {"b": [2, 3]}


def test_compare_is_neutral_on_identical_logits_and_sees_a_change() -> None:
    torch.manual_seed(0)
    logits = torch.randn(20, 7)
    same = compare(logits, logits.clone(), torch.zeros(20, dtype=torch.long))
    assert same["top1_agreement"] == 1.0 and abs(same["kl"]) < 1e-12
    flipped = compare(logits, -logits)
    assert flipped["top1_agreement"] == 0.0 and flipped["kl"] > 0.5


def test_against_controls_signs_bigger_effects_positive_for_both_directions() -> None:
    kl = against_controls("kl", 1.0, [0.1, 0.2, 0.3])
    assert kl["z"] > 0 and kl["percentile"] == 100.0
    agree = against_controls("top1_agreement", 0.2, [0.9, 0.95, 0.85])  # lower agreement = bigger effect
    assert agree["z"] > 0 and agree["percentile"] == 100.0
    weak = against_controls("kl", 0.05, [0.1, 0.2, 0.3])
    assert weak["z"] < 0 and weak["percentile"] == 0.0
    assert math.isclose(kl["control_mean"], 0.2) and math.isclose(kl["control_std"], 0.1)
    assert against_controls("kl", 1.0, [])["z"] is None


@pytest.mark.parametrize("value,expected", [(0.2, 50.0), (0.0, 0.0)])
def test_percentile_counts_ties_half(value: float, expected: float) -> None:
    assert against_controls("kl", value, [0.2])["percentile"] == expected
