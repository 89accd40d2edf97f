"""The report's impact section: what PANs (and zero padding) do to predictions (docs/impact.md).

A summary of every ``impact`` metric per experiment and condition, then the per-model pieces of
:func:`pipeline.impact.report.impact_parts`: a table of PAN ablation against matched controls and
padding swaps, the PAN-vs-controls plot, border-distance curves and the largest class shifts.
Rows are those of the configuration the report shows (``ctx.config``) when it has any.
"""

from __future__ import annotations

from analysis.report.core import ReportContext, Section, empty, table_html


def impact_section(ctx: ReportContext) -> Section | None:
    """Effect of PANs on model behaviour, from the impact tables; None when there are none."""
    if ctx.count("impact") == 0:
        return None
    from pipeline.impact.report import impact_parts

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
