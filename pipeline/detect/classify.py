"""The default PAN classification. Raw z-scores are always stored, so SQL can re-decide.

- PAN: not dead and ``max_s |own_z[s]| >= tau``.
- Sides: those with ``|own_z| >= tau``, joined with '+' in the order top, bottom, left, right.
- Sign: ``excited`` when the border raises the output on every PAN side, ``inhibited`` when it
  lowers it on every PAN side, ``mixed`` otherwise.
- Border-informed: not a PAN, not dead, but ``max_s |obs_z[s]| >= tau``: the neuron carries border
  position inherited from earlier layers rather than produced by its own padding.
- Dead: the interior output is (nearly) constant, ``scale < DEAD_RELATIVE * median layer scale``
  (or zero); its z-scores are meaningless and it is never a PAN.
"""

from __future__ import annotations

import math

import torch

from pipeline.schema import SIDES

DEAD_RELATIVE = 1e-3
DEAD_ABSOLUTE = 1e-12


def dead_mask(scale: torch.Tensor) -> torch.Tensor:
    """Neurons whose interior output barely varies, relative to the layer's typical neuron."""
    finite = scale[torch.isfinite(scale)]
    median = float(finite.median()) if finite.numel() else 0.0
    return (scale <= DEAD_ABSOLUTE) | (scale < DEAD_RELATIVE * median) | ~torch.isfinite(scale)


def pan_sides(own_z: dict[str, float], tau: float) -> list[str]:
    return [s for s in SIDES if not math.isnan(own_z[s]) and abs(own_z[s]) >= tau]


def pan_sign(own_z: dict[str, float], sides: list[str]) -> str | None:
    if not sides:
        return None
    signs = {own_z[s] > 0 for s in sides}
    if signs == {True}:
        return "excited"
    if signs == {False}:
        return "inhibited"
    return "mixed"


def side_label(sides: list[str]) -> str | None:
    return "+".join(sides) if sides else None
