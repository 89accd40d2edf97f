"""The impact experiment registry and the settings built from it: same ids, options and errors as before."""

from __future__ import annotations

import pickle

import pytest

from pipeline.cli import build_parser, main
from pipeline.errors import one_line
from pipeline.impact import registry
from pipeline.impact.errors import ImpactError
from pipeline.impact.settings import ImpactSettings


def test_impact_ids_are_those_of_results_written_before_the_registry() -> None:
    # Folders written before experiments were registered are resumed by these ids: a renamed or
    # namespaced option would silently recompute every model.
    assert ImpactSettings().impact_id == "07c635000531"
    small = ImpactSettings(max_images=6, controls=2, padding_modes=("reflect",), border_patches=1, border_grid=3)
    assert small.impact_id == "e06578595546"
    assert ImpactSettings(batch_size=7, device="cpu").impact_id == ImpactSettings().impact_id  # speed knobs only


def test_settings_expose_experiment_options_and_survive_pickling() -> None:
    s = ImpactSettings(controls=3, padding_modes=("circular",))
    assert (s.controls, s.padding_modes, s.border_grid) == (3, ("circular",), 7)
    again = pickle.loads(pickle.dumps(s))  # Ray sends settings to workers this way
    assert again == s and again.controls == 3 and hash(again) == hash(s)
    assert s.updated(controls=None, device="cpu", nonsense=1) == ImpactSettings(controls=3, padding_modes=("circular",),
                                                                                 device="cpu")
    assert ImpactSettings(**s.to_dict()) == s
    with pytest.raises(TypeError, match="conrtols"):
        ImpactSettings(conrtols=3)
    with pytest.raises(AttributeError):
        _ = s.nonexistent


@pytest.mark.parametrize(("changes", "message"), [
    ({"controls": -1}, "--controls must be 0 or more"),
    ({"padding_modes": ("reflect", "zeros")}, "unknown padding mode(s) ['zeros']"),
    ({"patch_frac": 1.5}, "patch fraction must be between 0 and 1"),
    ({"border_grid": 1}, "border grid must be at least 2"),
])
def test_each_experiment_checks_its_own_options(changes: dict, message: str) -> None:
    with pytest.raises(ImpactError) as info:
        ImpactSettings(**changes)
    assert message in str(info.value)


def test_options_reach_the_command_line_in_run_order() -> None:
    assert [e.name for e in registry.experiments()] == ["ablation", "padding", "border_distance"]
    assert registry.output_tables() == ("impact_classes", "impact_border", "impact")  # impact (the done mark) last
    args = build_parser().parse_args(["impact", "m", "--out", "o", "--padding-modes", "reflect, circular",
                                      "--controls", "0", "--patch-frac", "0.25"])
    assert (args.padding_modes, args.controls, args.patch_frac) == (("reflect", "circular"), 0, 0.25)
    assert build_parser().parse_args(["impact", "m", "--out", "o", "--padding-modes", ""]).padding_modes == ()


def test_bad_impact_options_are_one_line_errors(tmp_path, capsys) -> None:
    assert main(["impact", "resnet10t", "--out", str(tmp_path / "r"), "--padding-modes", "reflect,zeros"]) == 2
    err = capsys.readouterr().err
    assert "unknown padding mode(s) ['zeros']" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    assert main(["survey", "resnet10t", "--out", str(tmp_path / "r"), "--padding-modes", "reflect"]) == 2
    assert "--padding-modes only apply with --impact" in capsys.readouterr().err


def test_one_line_keeps_an_error_to_one_line() -> None:
    wall = RuntimeError("Binder Error: no column x\n\nLINE 1: select x\n               ^")
    assert one_line(wall) == "Binder Error: no column x LINE 1: select x ^"
    assert one_line(wall, first_line_only=True) == "Binder Error: no column x"
    assert one_line(KeyError()) == "KeyError"  # nothing said: its type
    assert one_line(ValueError("x" * 500)) == "x" * 300
    assert one_line(ValueError("y" * 3000), 2000, first_line_only=True) == "y" * 2000
