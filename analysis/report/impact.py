"""The report's impact section: what PANs (and zero padding) do to predictions (docs/impact.md).

Per model and impact settings: a summary of PAN ablation against matched controls and padding
swaps, the PAN-vs-controls plot, border-distance curves and the largest class shifts; then every
``impact`` metric per experiment and condition. Rows are those of the configuration the report
shows (``ctx.config``) when it has any.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from analysis.connection import sql_literal
from analysis.report.core import ReportContext, Section, empty, figure_html, table_html
from pipeline.impact.registry import experiments

MAX_PLOTTED = 40  # models in the per-model plots and the class-shift table


def impact_section(ctx: ReportContext) -> Section | None:
    """Effect of PANs on model behaviour, from the impact tables; None when there are none."""
    if ctx.count("impact") == 0:
        return None
    config = ctx.config if ctx.config and ctx.count(f"impact WHERE config_id = {sql_literal(ctx.config)}") else None
    where = f"WHERE config_id = {sql_literal(config)}" if config else ""
    summary = ctx.table(f"SELECT * FROM impact_metrics {where}")
    parts = [
        *impact_parts(ctx.con, config),
        "<h3>All impact metrics</h3><p>Mean and spread of each metric per experiment and condition, over models.</p>",
        table_html(summary, max_rows=60) if summary.num_rows else empty("No impact rows."),
    ]
    return Section("impact", "Impact of PANs on model behaviour", "\n".join(parts))


@dataclass
class ImpactView:
    """What an experiment's report panel reads: rows of one configuration and the models to show.

    ``ranked`` are the summary rows of the models shown (largest PAN-vs-controls KL z first; the
    summary's columns, e.g. ``pan_kl``), ``shown`` their ``(model_id, impact_id)`` keys.
    """

    con: Any
    config_id: str | None
    summary: list[dict[str, Any]]
    ranked: list[dict[str, Any]]
    shown: list[tuple[str, str]]

    def rows(self, table: str, sql: str) -> list[dict[str, Any]]:
        """``sql`` with ``{t}`` standing for ``table`` (this configuration's rows); [] when there is no such table."""
        return _rows(self.con, table, sql, self.config_id)

    @staticmethod
    def key(row: dict[str, Any]) -> tuple[str, str]:
        return row["model_id"], row["impact_id"]

    def label(self, key: tuple[str, str], width: int) -> str:
        """A model's short name for an axis (with its impact settings when the folder has several)."""
        many = len({r["impact_id"] for r in self.summary}) > 1
        return key[0].split(":")[-1][-width:] + (f" [{(key[1] or '')[:6]}]" if many else "")

    @staticmethod
    def figure(title: str, fig: Any) -> str:
        """A titled figure (HTML)."""
        return f"<h3>{title}</h3>" + figure_html(fig, alt=title)


def _rows(con: Any, table: str, sql: str, config_id: str | None = None) -> list[dict[str, Any]]:
    source = table
    if config_id:
        source = f"(SELECT * FROM {table} WHERE config_id = {sql_literal(config_id)})"
    try:
        cur = con.execute(sql.replace("{t}", source))
    except Exception:  # a view that does not exist (no such results yet) is simply empty
        return []
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _named_rows(con: Any, name: str, config_id: str | None) -> list[dict[str, Any]]:
    """The rows of named query ``name`` (of one configuration when ``config_id`` is given)."""
    return _rows(con, name, "SELECT * FROM {t}", config_id)


def impact_parts(con: Any, config_id: str | None = None) -> list[str]:
    """Summary table, PAN-vs-controls plot, border-distance curves and class shifts (HTML pieces).

    ``config_id`` keeps the rows of one detection configuration; one summary row per model and
    impact settings (``impact_id``). Empty when there are no impact rows.
    """
    import matplotlib

    matplotlib.use("Agg")

    summary = _named_rows(con, "impact_per_model", config_id)
    if not summary:
        return []
    parts = ["<p>PAN ablation clamps every PAN to its mean activation on the probe; controls clamp as many random "
             "non-PAN neurons of the same layers (several seeds). <i>z</i> and percentile place the PAN result in "
             "the control distribution (positive z, percentile near 100: PANs matter more than random neurons). "
             "Padding rows run the same weights with another padding mode. See docs/impact.md.</p>"]
    cols = [c for c in summary[0] if any(r[c] is not None for r in summary)]
    parts.append(table_html(pa.Table.from_pylist([{c: r[c] for c in cols} for r in summary])))

    key = ImpactView.key
    # Plots show at most MAX_PLOTTED models: those whose PANs matter most against their controls.
    ranked = sorted(summary, key=lambda r: -(r["kl_z"] if r["kl_z"] is not None else -math.inf))[:MAX_PLOTTED]
    shown = [key(r) for r in ranked]
    if len(summary) > MAX_PLOTTED:
        parts.append(f"<p>Plots show the {MAX_PLOTTED} of {len(summary)} models with the largest KL z.</p>")

    view = ImpactView(con, config_id, summary, ranked, shown)
    for experiment in experiments():  # each registered experiment's own panel (pipeline/impact/registry.py)
        if experiment.report is not None:
            parts += experiment.report(view)

    shifts = [r for r in _named_rows(con, "impact_class_shifts", config_id) if key(r) in shown]
    if shifts:
        parts.append("<h3>Classes that gain and lose most (mean probability)</h3>")
        columns = ["model_id", "condition", "class_index", "class_name", "count_delta", "prob_delta"]
        parts.append(table_html(pa.Table.from_pylist([{c: r[c] for c in columns} for r in shifts])))
    return parts
