"""The ``border_distance`` experiment: confidence in a pasted patch's class against its distance
to the border, for the intact model, PANs ablated and the first matched control
(:mod:`pipeline.impact.border_distance`).

Rows go to ``impact_border`` (one per condition and distance) and one ``border_distance/summary``
row set to ``impact`` (edge minus centre confidence per condition). ``--border-patches 0`` skips it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.impact.errors import ImpactError
from pipeline.impact.registry import Option, register_experiment
from pipeline.options import count, fraction, positive_int

#: Border-distance panels in the report (one per model, the models the view ranks first).
MAX_PANELS = 8


def _check(values: Mapping[str, Any]) -> None:
    if not 0 < values["patch_frac"] < 1:
        raise ImpactError(f"patch fraction must be between 0 and 1, got {values['patch_frac']}")
    if values["border_grid"] < 2:
        raise ImpactError(f"border grid must be at least 2, got {values['border_grid']}")


def _panel(view: Any) -> list[str]:
    """Confidence against distance, one panel per model."""
    first = view.shown[:MAX_PANELS]
    border = [r for r in view.rows("impact_border", "SELECT model_id, impact_id, condition, distance_px, confidence "
                                                    "FROM {t} ORDER BY model_id, condition, distance_px")
              if view.key(r) in first]
    if not border:
        return []
    import matplotlib.pyplot as plt

    panels = [k for k in first if any(view.key(r) == k for r in border)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.8), squeeze=False)
    for ax, k in zip(axes[0], panels, strict=True):
        mine = [r for r in border if view.key(r) == k]
        for cond in sorted({r["condition"] for r in mine}):
            pts = [r for r in mine if r["condition"] == cond]
            ax.plot([p["distance_px"] for p in pts], [p["confidence"] for p in pts], marker="o", ms=3, label=cond)
        ax.set_title(view.label(k, 30), fontsize=8)
        ax.set_xlabel("distance to nearest border (px)")
        ax.set_ylabel("confidence in patch class")
        ax.legend(fontsize=7)
    return [view.figure("Confidence against distance to the border", fig)]


@register_experiment(
    "border_distance",
    options=(
        Option("border_patches", 4, "patches for the border-distance curve (default {default}; 0 skips it)", count),
        Option("border_grid", 7, "patch positions per axis (default {default})", positive_int),
        Option("patch_frac", 0.4, "patch side as a share of the image side (default {default})", fraction),
    ),
    check=_check,
    tables={"impact_border": None},
    report=_panel,
)
def run(ctx: Any) -> None:
    from pipeline.impact import border_distance

    s = ctx.settings
    if s.border_patches <= 0:
        return
    conditions = {"intact": ctx.predict()}
    if ctx.pans:
        conditions["pan_ablation"] = ctx.ablate(ctx.pans)
    if ctx.control_units:
        conditions["random_control"] = ctx.ablate(ctx.control_units[0])
    patches = border_distance.patches_from(ctx.images.images, s.border_patches, s.patch_frac)
    rows = border_distance.border_curves(patches, tuple(ctx.images.images.shape[-2:]), s.border_grid, conditions,
                                         reference="intact")
    ctx.add_rows("impact_border", rows)
    ctx.record("border_distance", "summary", None, {
        f"edge_minus_centre_{name}": border_distance.edge_minus_centre(rows, name) for name in conditions
    })
