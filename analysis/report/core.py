"""What every report section shares: the context it reads from, its result, and HTML helpers.

A section is a function ``(ctx: ReportContext) -> Section | None`` (None: nothing to show).
Figures are matplotlib (Agg) rendered to PNG and embedded as base64, so the report is one
self-contained file that opens offline and can be mailed around.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from analysis.output import format_number


@dataclass
class Section:
    """One titled part of the report: an anchor id, a title and its HTML body."""

    id: str
    title: str
    body: str


@dataclass
class ReportContext:
    """The open results connection (materialized named queries) and the report's options."""

    con: Any
    directory: str
    top_k: int = 30
    tau: float | None = None
    config: str = ""  # the configuration shown (config_id)
    configs: list[str] = field(default_factory=list)  # all in the folder, most models first
    _cache: dict[str, pa.Table] = field(default_factory=dict)

    def table(self, sql: str) -> pa.Table:
        """The result of ``sql`` (cached: several sections read the same named query)."""
        if sql not in self._cache:
            self._cache[sql] = self.con.sql(sql).to_arrow_table()
        return self._cache[sql]

    def named(self, name: str) -> pa.Table:
        return self.table(f"SELECT * FROM {name}")

    def count(self, view: str) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0])


SectionFn = Callable[[ReportContext], Section | None]


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def figure_html(fig, *, alt: str, caption: str | None = None, dpi: int = 110) -> str:
    """``fig`` as an embedded PNG <figure> (the figure is closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def _cell_html(value: Any) -> str:
    if value is None:
        return '<td class="null">–</td>'
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, float):
        return f'<td class="num">{esc(format_number(value))}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, datetime):
        return f"<td>{value:%Y-%m-%d %H:%M}</td>"
    return f"<td>{esc(value)}</td>"


def table_html(table: pa.Table, *, max_rows: int | None = None, drop: tuple[str, ...] = ("config_id",)) -> str:
    """An HTML table of ``table`` (first ``max_rows`` rows; ``drop`` columns left out when constant)."""
    import pyarrow.compute as pc

    for name in drop:
        if name in table.column_names and len(pc.unique(table[name])) <= 1:
            table = table.drop_columns([name])
    if table.num_rows == 0:
        return '<p class="empty">No rows.</p>'
    shown = table if max_rows is None else table.slice(0, max_rows)
    head = "".join(f"<th>{esc(name)}</th>" for name in table.column_names)
    rows = "".join("<tr>" + "".join(_cell_html(v) for v in row.values()) + "</tr>" for row in shown.to_pylist())
    more = ""
    if shown.num_rows < table.num_rows:
        more = f'<p class="note">First {shown.num_rows} of {table.num_rows} rows.</p>'
    return f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>{more}'


def empty(message: str) -> str:
    return f'<p class="empty">{esc(message)}</p>'
