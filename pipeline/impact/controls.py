"""Which neurons an ablation removes: the PANs, and matched random non-PAN controls."""

from __future__ import annotations

import random
from collections import defaultdict

import pyarrow as pa

from pipeline.impact.errors import ImpactError

Units = dict[str, list[int]]

_NEEDED = ("layer", "channel", "is_pan")


def _rows(neurons: pa.Table) -> list[tuple[str, int, bool, bool]]:
    missing = [c for c in _NEEDED if c not in neurons.column_names]
    if missing:
        raise ImpactError(f"neurons table lacks columns {missing}")
    cols = neurons.select([*_NEEDED, *(["dead"] if "dead" in neurons.column_names else [])]).to_pydict()
    dead = cols.get("dead") or [False] * len(cols["layer"])
    return [(layer, int(ch), bool(pan), bool(d)) for layer, ch, pan, d in
            zip(cols["layer"], cols["channel"], cols["is_pan"], dead, strict=True)]


def pan_units(neurons: pa.Table) -> Units:
    """Layer -> channels of the neurons marked PAN (dead neurons are never PANs)."""
    units: Units = defaultdict(list)
    for layer, ch, pan, dead in _rows(neurons):
        if pan and not dead:
            units[layer].append(ch)
    return dict(units)


def count(units: Units) -> int:
    return sum(len(v) for v in units.values())


def matched_controls(neurons: pa.Table, pans: Units, seed: int) -> Units:
    """As many random non-PAN, non-dead neurons as there are PANs, layer by layer.

    Dead neurons are left out: clamping a constant neuron to its mean changes nothing, so they
    would make the controls look harmless. Where a layer has fewer candidates than PANs, the
    shortfall is drawn from the other candidates of the PAN layers (so the count always matches
    when it can); the number actually ablated is recorded with every result.
    """
    candidates: dict[str, list[int]] = defaultdict(list)
    pan_set = {(layer, ch) for layer, chs in pans.items() for ch in chs}
    for layer, ch, _pan, dead in _rows(neurons):
        if layer in pans and (layer, ch) not in pan_set and not dead:
            candidates[layer].append(ch)
    rng = random.Random(seed)
    chosen: Units = {}
    leftovers: list[tuple[str, int]] = []
    shortfall = 0
    for layer in sorted(pans):
        pool = sorted(candidates.get(layer, []))
        rng.shuffle(pool)
        take = min(len(pans[layer]), len(pool))
        chosen[layer] = sorted(pool[:take])
        leftovers += [(layer, ch) for ch in pool[take:]]
        shortfall += len(pans[layer]) - take
    rng.shuffle(leftovers)
    for layer, ch in leftovers[:shortfall]:
        chosen[layer] = sorted([*chosen[layer], ch])
    return {layer: chs for layer, chs in chosen.items() if chs}


def relabelled(neurons: pa.Table, units: Units) -> pa.Table:
    """``neurons`` with ``is_pan`` true exactly for ``units`` (for negative controls in tests and studies)."""
    chosen = {(layer, ch) for layer, chs in units.items() for ch in chs}
    cols = neurons.select(["layer", "channel"]).to_pydict()
    flags = pa.array([(layer, int(ch)) in chosen for layer, ch in zip(cols["layer"], cols["channel"], strict=True)])
    return neurons.set_column(neurons.column_names.index("is_pan"), "is_pan", flags)
