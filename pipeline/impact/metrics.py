"""How far a condition's predictions are from the intact model's, on the same images."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: For each metric, +1 if a larger value means a larger effect of the condition, -1 if smaller does.
EFFECT_SIGN: dict[str, int] = {
    "top1_agreement": -1,  # share of images whose top-1 class is the intact model's
    "kl": +1,  # mean KL(intact || condition), nats
    "intact_class_prob": -1,  # mean probability the condition gives the intact model's top-1 class
    "accuracy": -1,  # top-1 accuracy against labels (only with labels)
}


def compare(reference: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
    """Metrics of ``logits`` against the intact ``reference`` logits (both (N, classes))."""
    ref_lp = F.log_softmax(reference.double(), dim=1)
    lp = F.log_softmax(logits.double(), dim=1)
    ref_top = ref_lp.argmax(1)
    out = {
        "top1_agreement": float((lp.argmax(1) == ref_top).double().mean()),
        "kl": float((ref_lp.exp() * (ref_lp - lp)).sum(1).mean()),
        "intact_class_prob": float(lp.exp().gather(1, ref_top[:, None]).mean()),
    }
    if labels is not None:
        out["accuracy"] = accuracy(logits, labels)
    return out


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).double().mean())


def against_controls(metric: str, value: float, controls: list[float]) -> dict[str, float | None]:
    """Where the PAN result falls in the control distribution.

    ``z``: (value - control mean) / control std, signed so that positive means a *larger effect*
    than the controls. ``percentile``: share of controls with a smaller effect (ties count half), in
    percent: 100 means the PANs beat every control.
    """
    sign = EFFECT_SIGN[metric]
    n = len(controls)
    if n == 0:
        return {"control_mean": None, "control_std": None, "z": None, "percentile": None}
    mean = sum(controls) / n
    std = math.sqrt(sum((c - mean) ** 2 for c in controls) / (n - 1)) if n > 1 else 0.0
    diff = sign * (value - mean)
    if std > 0:
        z: float | None = diff / std
    else:
        z = None if diff == 0 else math.copysign(math.inf, diff)
    smaller = sum(1.0 if sign * (value - c) > 0 else 0.5 if value == c else 0.0 for c in controls)
    return {"control_mean": mean, "control_std": std, "z": z, "percentile": 100.0 * smaller / n}
