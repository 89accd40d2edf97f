"""Query results as text: an aligned table for people, CSV and JSON for programs."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import date, datetime
from typing import Any

import pyarrow as pa

FORMATS: tuple[str, ...] = ("table", "csv", "json")
MAX_CELL = 60


def format_number(value: float) -> str:
    """Few significant digits: enough to compare, short enough to scan a column."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value:.4g}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, list):
        inner = ", ".join(_cell(v) for v in value[:6])
        text = f"[{inner}{', ...' if len(value) > 6 else ''}]"
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _is_numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)


def render_table(table: pa.Table, *, max_rows: int | None = None, title: str | None = None) -> str:
    """An aligned text table; numbers right-aligned; at most ``max_rows`` rows (None: all)."""
    shown = table if max_rows is None or table.num_rows <= max_rows else table.slice(0, max_rows)
    headers = list(table.column_names)
    columns = [[_cell(v) for v in shown.column(i).to_pylist()] for i in range(table.num_columns)]
    widths = [max([len(h), *(len(c) for c in col)]) for h, col in zip(headers, columns, strict=True)]
    numeric = [_is_numeric(f.type) for f in table.schema]

    def line(cells: list[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(line(headers))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line([col[r] for col in columns]) for r in range(shown.num_rows))
    if shown.num_rows < table.num_rows:
        out.append(f"... {table.num_rows - shown.num_rows} more rows ({table.num_rows} in all)")
    else:
        out.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(out)


def json_value(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def render_json(table: pa.Table) -> str:
    """A JSON array of row objects (NaN and infinities as null, times as ISO 8601)."""
    rows = [{k: json_value(v) for k, v in row.items()} for row in table.to_pylist()]
    return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"


def render_csv(table: pa.Table) -> str:
    """CSV with a header; list columns as JSON arrays, NULL as an empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        cells = []
        for value in row.values():
            if value is None:
                cells.append("")
            elif isinstance(value, list | dict):
                cells.append(json.dumps(json_value(value)))
            elif isinstance(value, datetime):
                cells.append(value.isoformat())
            else:
                cells.append(value)
        writer.writerow(cells)
    return buffer.getvalue()


def render(table: pa.Table, fmt: str, *, max_rows: int | None = None, title: str | None = None) -> str:
    if fmt == "table":
        return render_table(table, max_rows=max_rows, title=title) + "\n"
    if fmt == "csv":
        return render_csv(table)
    if fmt == "json":
        return render_json(table)
    raise ValueError(f"unknown format {fmt!r}")
