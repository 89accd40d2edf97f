"""The PAN rule, written once. The detector (core.py) and the synthetic results
(analysis/synthetic.py) call :func:`classify`; the SQL macro ``pans_at`` (analysis/sql/macros.sql)
is tested against it on real detector output. Raw z-scores are always stored, so SQL can re-decide.

- Which rule (``pan_rule``): ``constant`` in layers whose padding is constant (zeros or another
  value): PANs are about a constant border. ``measured_only`` in reflect, replicate and circular
  layers: their own responses are measured and stored as they are, but no neuron is a PAN there
  (their padding repeats image content, so a response to it is not a response to *a border*).
- PAN: rule ``constant``, not dead and ``max_s |own_z[s]| >= tau``.
- Sides: those with ``|own_z| >= tau``, joined with '+' in the order top, bottom, left, right.
- Sign: ``excited`` when the border raises the output on every PAN side, ``inhibited`` when it
  lowers it on every PAN side, ``mixed`` otherwise.
- Border-informed: not a PAN, not dead, but ``max_s |obs_z[s]| >= tau``: the neuron's output
  differs at the border, beyond what a constant padding of its own makes of it.
- Dead: the interior output is (nearly) constant, ``scale < DEAD_RELATIVE * median layer scale``
  (or zero); its z-scores are meaningless and it is never a PAN.

numpy only, so the analysis layer can use it without importing torch.
"""

from __future__ import annotations

import numpy as np

from pipeline.schema import SIDES

DEAD_RELATIVE = 1e-3
DEAD_ABSOLUTE = 1e-12
#: Padding modes (``layers.padding_mode``) whose layers can hold PANs.
CONSTANT_MODES = frozenset({"zeros", "constant"})
#: ``neurons.pan_rule`` values; NULL in folders written before detector 1.2 (every mode counted).
CONSTANT_RULE, MEASURED_ONLY = "constant", "measured_only"

# '+'-joined side labels for each of the 16 hit patterns (bit j = SIDES[j]).
_LABELS = np.array(
    [None] + ["+".join(s for j, s in enumerate(SIDES) if code >> j & 1) for code in range(1, 16)], dtype=object
)
_BITS = 1 << np.arange(len(SIDES))


def pan_rule(padding_mode: str) -> str:
    """The rule a layer's neurons are classified by, from its ``layers.padding_mode``."""
    return CONSTANT_RULE if padding_mode in CONSTANT_MODES else MEASURED_ONLY


def dead_mask(scale: np.ndarray) -> np.ndarray:
    """Neurons whose interior output barely varies, relative to the layer's typical neuron.

    The median is the lower middle value for an even count (as ``torch.median``).
    """
    scale = np.asarray(scale, dtype=np.float64)
    finite = np.sort(scale[np.isfinite(scale)])
    median = float(finite[(len(finite) - 1) // 2]) if len(finite) else 0.0
    with np.errstate(invalid="ignore"):
        return (scale <= DEAD_ABSOLUTE) | (scale < DEAD_RELATIVE * median) | ~np.isfinite(scale)


def classify(
    own: np.ndarray, obs: np.ndarray, dead: np.ndarray, tau: float, rule: str = CONSTANT_RULE
) -> dict[str, np.ndarray]:
    """The rule on (n, 4) arrays of own_z / obs_z (NaN: no strip) for n neurons of one layer.

    Returns the columns is_pan, pan_sides, pan_sign (object arrays, None where not a PAN),
    border_informed and pan_rule.
    """
    own = np.asarray(own, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    dead = np.asarray(dead, dtype=bool)
    n = len(own)
    with np.errstate(invalid="ignore"):
        hit = np.abs(own) >= tau  # NaN compares False
        obs_hit = (np.abs(obs) >= tau).any(axis=1)
    hit &= ~dead[:, None]
    if rule != CONSTANT_RULE:
        hit[:] = False
    is_pan = hit.any(axis=1)
    up = (hit & (own > 0)).any(axis=1)
    down = (hit & ~(own > 0)).any(axis=1)
    sign = np.full(n, None, dtype=object)
    sign[is_pan & up & ~down] = "excited"
    sign[is_pan & down & ~up] = "inhibited"
    sign[is_pan & up & down] = "mixed"
    return {
        "is_pan": is_pan,
        "pan_sides": _LABELS[hit.astype(np.int64) @ _BITS],
        "pan_sign": sign,
        "border_informed": ~is_pan & ~dead & obs_hit,
        "pan_rule": np.full(n, rule, dtype=object),
    }
