"""The ``ablation`` experiment: every PAN clamped to its probe mean, against matched random controls.

Rows: ``ablation/pan_ablation`` (PANs clamped), ``control/random_control`` (one per control seed:
as many random non-PAN, non-dead neurons of the same layers) and ``ablation/pan_vs_control`` (the
PAN result placed in the control distribution: z, percentile, control mean and spread).
Class shifts go to ``impact_classes``. The report panel plots PAN ablation against its controls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.impact.errors import ImpactError
from pipeline.impact.registry import Option, register_experiment
from pipeline.options import count


def _check(values: Mapping[str, Any]) -> None:
    if values["controls"] < 0:
        raise ImpactError(f"--controls must be 0 or more, got {values['controls']}")


def _panel(view: Any) -> list[str]:
    """PAN ablation's KL against each matched control's, per model (the models the view shows)."""
    controls = view.rows("impact", "SELECT model_id, impact_id, value FROM {t} "
                                   "WHERE condition='random_control' AND metric='kl'")
    if not controls:
        return []
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(view.shown)), 3))
    for i, (k, row) in enumerate(zip(view.shown, view.ranked, strict=True)):
        vals = [r["value"] for r in controls if view.key(r) == k]
        ax.scatter([i] * len(vals), vals, color="grey", s=14, label="random controls" if i == 0 else None)
        if row["pan_kl"] is not None:
            ax.scatter([i], [row["pan_kl"]], color="crimson", marker="D", s=30,
                       label="PAN ablation" if i == 0 else None)
    ax.set_xticks(range(len(view.shown)), [view.label(k, 24) for k in view.shown], rotation=30, ha="right")
    ax.set_ylabel("mean KL to intact (nats)")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylim(bottom=0)  # KL is never negative
    ax.legend(fontsize=8)
    return [view.figure("PAN ablation against matched controls", fig)]


@register_experiment(
    "ablation",
    options=(Option("controls", 5, "seeds of matched random-neuron controls (default {default})", count),),
    check=_check,
    tables={"impact_classes": None},
    report=_panel,
)
def run(ctx: Any) -> None:
    from pipeline.impact import controls, metrics

    pan_metrics: dict[str, float] | None = None
    if ctx.pans:
        logits = ctx.ablate(ctx.pans)(ctx.images.images)
        pan_metrics = metrics.compare(ctx.intact, logits, ctx.labels)
        ablated = float(controls.count(ctx.pans))
        ctx.record("ablation", "pan_ablation", None, {**pan_metrics, "neurons_ablated": ablated})
        ctx.record_class_shifts("ablation", "pan_ablation", None, logits)
    control_metrics: list[dict[str, float]] = []
    for i, units in enumerate(ctx.control_units):
        seed = ctx.settings.seed + i
        logits = ctx.ablate(units)(ctx.images.images)
        m = metrics.compare(ctx.intact, logits, ctx.labels)
        control_metrics.append(m)
        ctx.record("control", "random_control", seed, {**m, "neurons_ablated": float(controls.count(units))})
        ctx.record_class_shifts("control", "random_control", seed, logits)
    if pan_metrics is not None and control_metrics:
        for metric, value in pan_metrics.items():
            placed = metrics.against_controls(metric, value, [c[metric] for c in control_metrics])
            ctx.record("ablation", "pan_vs_control", None, {f"{metric}_{k}": v for k, v in placed.items()})
