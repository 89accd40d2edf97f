"""HOOK: the report's impact section (ablation, padding counterfactual, border distance).

>>> Owner: whoever writes the impact experiments. Add plots from the ``impact`` view here. <<<

This function is already in the report's section list (analysis/report/sections.py, SECTIONS),
between the layer statistics and the failures. Until the impact experiments land it shows the
``impact`` rows summarised as a table, or nothing when the table is empty. To add plots:
build figures with matplotlib (see analysis/report/plots.py for the style helpers), turn each into
HTML with ``figure_html(fig, alt=..., caption=...)``, and append it to ``parts``. Read data with
``ctx.table(SQL)``; the view ``impact`` has model_id, config_id, experiment, condition, seed,
metric, value (pipeline/schema.py IMPACT), and ``models`` has family, num_params, top1 to join on.
"""

from __future__ import annotations

from analysis.report.core import ReportContext, Section, empty, table_html


def impact_section(ctx: ReportContext) -> Section | None:
    """Effect of PANs on model behaviour, from the ``impact`` table; None when there is none."""
    if ctx.count("impact") == 0:
        return None
    summary = ctx.table(
        """
        SELECT config_id, experiment, condition, metric,
               count(DISTINCT model_id)::BIGINT AS models, count(*)::BIGINT AS rows,
               avg(value) AS mean, stddev_samp(value) AS std, min(value) AS min, max(value) AS max
        FROM impact
        GROUP BY ALL
        ORDER BY config_id, experiment, metric, condition
        """
    )
    parts = [
        "<p>Summary of the impact experiments over all models (mean and spread of each metric per "
        "experiment and condition).</p>",
        table_html(summary, max_rows=60) if summary.num_rows else empty("No impact rows."),
        # --- add impact plots below (e.g. PAN ablation versus random-control ablation per family) ---
    ]
    return Section("impact", "Impact of PANs on model behaviour", "\n".join(parts))
