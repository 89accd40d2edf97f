"""The report's impact section: what PANs (and zero padding) do to predictions (docs/impact.md).

Per model and impact settings: a summary of PAN ablation against matched controls and padding
swaps, the PAN-vs-controls plot, border-distance curves and the largest class shifts; then every
``impact`` metric per experiment and condition. Rows are those of the configuration the report
shows (``ctx.config``) when it has any.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from analysis.report.core import ReportContext, Section, empty, figure_html, table_html

MAX_PLOTTED = 40  # models in the controls plot and the class-shift table
MAX_BORDER_PANELS = 8  # border-distance panels


def impact_section(ctx: ReportContext) -> Section | None:
    """Effect of PANs on model behaviour, from the impact tables; None when there are none."""
    if ctx.count("impact") == 0:
        return None
    config = ctx.config if ctx.config and ctx.count(f"impact WHERE config_id = '{_q(ctx.config)}'") else None
    where = f"WHERE config_id = '{_q(config)}'" if config else ""
    summary = ctx.table(
        f"""
        SELECT config_id, experiment, condition, metric,
               count(DISTINCT model_id)::BIGINT AS models, count(*)::BIGINT AS rows,
               avg(value) AS mean, stddev_samp(value) AS std, min(value) AS min, max(value) AS max
        FROM impact {where}
        GROUP BY ALL
        ORDER BY config_id, experiment, metric, condition
        """
    )
    parts = [
        *impact_parts(ctx.con, config),
        "<h3>All impact metrics</h3><p>Mean and spread of each metric per experiment and condition, over models.</p>",
        table_html(summary, max_rows=60) if summary.num_rows else empty("No impact rows."),
    ]
    return Section("impact", "Impact of PANs on model behaviour", "\n".join(parts))


def _q(text: str) -> str:
    return text.replace("'", "''")


def _rows(con: Any, table: str, sql: str, config_id: str | None = None) -> list[dict[str, Any]]:
    source = table
    if config_id:
        source = f"(SELECT * FROM {table} WHERE config_id = '{_q(config_id)}')"
    try:
        cur = con.execute(sql.replace("{t}", source))
    except Exception:  # a view that does not exist (no such results yet) is simply empty
        return []
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def impact_parts(con: Any, config_id: str | None = None) -> list[str]:
    """Summary table, PAN-vs-controls plot, border-distance curves and class shifts (HTML pieces).

    ``config_id`` keeps the rows of one detection configuration; one summary row per model and
    impact settings (``impact_id``). Empty when there are no impact rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = _rows(con, "impact", """
        SELECT model_id, impact_id,
          max(value) FILTER (WHERE condition='intact' AND metric='pans') AS pans,
          max(value) FILTER (WHERE condition='intact' AND metric='images') AS images,
          max(value) FILTER (WHERE condition='intact' AND metric='accuracy') AS accuracy,
          max(value) FILTER (WHERE condition='pan_ablation' AND metric='top1_agreement') AS pan_agreement,
          max(value) FILTER (WHERE condition='pan_ablation' AND metric='kl') AS pan_kl,
          max(value) FILTER (WHERE condition='pan_ablation' AND metric='accuracy') AS pan_accuracy,
          max(value) FILTER (WHERE condition='pan_vs_control' AND metric='kl_control_mean') AS control_kl_mean,
          max(value) FILTER (WHERE condition='pan_vs_control' AND metric='kl_control_std') AS control_kl_std,
          max(value) FILTER (WHERE condition='pan_vs_control' AND metric='kl_z') AS kl_z,
          max(value) FILTER (WHERE condition='pan_vs_control' AND metric='kl_percentile') AS kl_percentile,
          max(value) FILTER (WHERE condition='reflect' AND metric='top1_agreement') AS reflect_agreement,
          max(value) FILTER (WHERE condition='replicate' AND metric='top1_agreement') AS replicate_agreement,
          max(value) FILTER (WHERE condition='circular' AND metric='top1_agreement') AS circular_agreement
        FROM {t} GROUP BY model_id, impact_id ORDER BY model_id, impact_id""", config_id)
    if not summary:
        return []
    parts = ["<p>PAN ablation clamps every PAN to its mean activation on the probe; controls clamp as many random "
             "non-PAN neurons of the same layers (several seeds). <i>z</i> and percentile place the PAN result in "
             "the control distribution (positive z, percentile near 100: PANs matter more than random neurons). "
             "Padding rows run the same weights with another padding mode. See docs/impact.md.</p>"]
    cols = [c for c in summary[0] if any(r[c] is not None for r in summary)]
    parts.append(table_html(pa.Table.from_pylist([{c: r[c] for c in cols} for r in summary])))

    def key(r: dict[str, Any]) -> tuple[str, str]:
        return r["model_id"], r["impact_id"]

    def label(k: tuple[str, str], width: int) -> str:
        many = len({r["impact_id"] for r in summary}) > 1
        return k[0].split(":")[-1][-width:] + (f" [{(k[1] or '')[:6]}]" if many else "")

    # Plots show at most MAX_PLOTTED models: those whose PANs matter most against their controls.
    ranked = sorted(summary, key=lambda r: -(r["kl_z"] if r["kl_z"] is not None else -math.inf))[:MAX_PLOTTED]
    shown = [key(r) for r in ranked]
    if len(summary) > MAX_PLOTTED:
        parts.append(f"<p>Plots show the {MAX_PLOTTED} of {len(summary)} models with the largest KL z.</p>")

    controls = _rows(con, "impact", "SELECT model_id, impact_id, value FROM {t} "
                                    "WHERE condition='random_control' AND metric='kl'", config_id)
    if controls:
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(shown)), 3))
        for i, (k, row) in enumerate(zip(shown, ranked, strict=True)):
            vals = [r["value"] for r in controls if key(r) == k]
            ax.scatter([i] * len(vals), vals, color="grey", s=14, label="random controls" if i == 0 else None)
            if row["pan_kl"] is not None:
                ax.scatter([i], [row["pan_kl"]], color="crimson", marker="D", s=30,
                           label="PAN ablation" if i == 0 else None)
        ax.set_xticks(range(len(shown)), [label(k, 24) for k in shown], rotation=30, ha="right")
        ax.set_ylabel("mean KL to intact (nats)")
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_ylim(bottom=0)  # KL is never negative
        ax.legend(fontsize=8)
        title = "PAN ablation against matched controls"
        parts.append(f"<h3>{title}</h3>" + figure_html(fig, alt=title))

    border = [r for r in _rows(con, "impact_border", "SELECT model_id, impact_id, condition, distance_px, confidence "
                                                     "FROM {t} ORDER BY model_id, condition, distance_px", config_id)
              if key(r) in shown[:MAX_BORDER_PANELS]]
    if border:
        panels = [k for k in shown[:MAX_BORDER_PANELS] if any(key(r) == k for r in border)]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.8), squeeze=False)
        for ax, k in zip(axes[0], panels, strict=True):
            mine = [r for r in border if key(r) == k]
            for cond in sorted({r["condition"] for r in mine}):
                pts = [r for r in mine if r["condition"] == cond]
                ax.plot([p["distance_px"] for p in pts], [p["confidence"] for p in pts], marker="o", ms=3, label=cond)
            ax.set_title(label(k, 30), fontsize=8)
            ax.set_xlabel("distance to nearest border (px)")
            ax.set_ylabel("confidence in patch class")
            ax.legend(fontsize=7)
        title = "Confidence against distance to the border"
        parts.append(f"<h3>{title}</h3>" + figure_html(fig, alt=title))

    shifts = [r for r in _rows(con, "impact_classes", """
        SELECT model_id, impact_id, condition, class_index, class_name, count_delta, prob_delta FROM (
          SELECT *, row_number() OVER (PARTITION BY model_id, impact_id, condition ORDER BY abs(prob_delta) DESC) AS rk
          FROM {t} WHERE experiment <> 'control') WHERE rk <= 5
        ORDER BY model_id, impact_id, condition, prob_delta DESC""", config_id) if key(r) in shown]
    if shifts:
        parts.append("<h3>Classes that gain and lose most (mean probability)</h3>")
        columns = ["model_id", "condition", "class_index", "class_name", "count_delta", "prob_delta"]
        parts.append(table_html(pa.Table.from_pylist([{c: r[c] for c in columns} for r in shifts])))
    return parts
