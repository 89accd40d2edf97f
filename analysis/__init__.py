"""Analysis of a results folder with DuckDB: views, macros, named statistics, and the HTML report.

    import analysis
    con = analysis.open("results/")                       # a duckdb connection
    con.sql("SELECT * FROM pans_by_family").to_arrow_table()
    analysis.fetch(con, "@pans_per_model", as_="pandas")  # or "polars", "arrow" (default)

See docs/analysis.md for the views, macros and named queries.
"""

from __future__ import annotations

from typing import Any

from analysis.connection import open_results as open
from analysis.families import family
from analysis.named import NamedQuery, named_queries
from pipeline.errors import PanSurveyError

__all__ = ["NamedQuery", "family", "fetch", "named_queries", "open", "resolve_sql"]


def resolve_sql(sql: str) -> str:
    """``@name`` stands for ``SELECT * FROM name`` of a named query; anything else is SQL as given."""
    text = sql.strip()
    if text.startswith("@"):
        from analysis.named import get

        return f"SELECT * FROM {get(text[1:].strip()).name}"
    return sql


def fetch(con, sql: str, *, as_: str = "arrow") -> Any:
    """Run ``sql`` (or ``@name``) and return an Arrow table, a pandas or a polars DataFrame."""
    table = con.sql(resolve_sql(sql)).to_arrow_table()
    if as_ == "arrow":
        return table
    if as_ == "pandas":
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise PanSurveyError("as_='pandas' needs pandas installed (pip install pandas)") from None
        return table.to_pandas()
    if as_ == "polars":
        try:
            import polars
        except ImportError:
            raise PanSurveyError("as_='polars' needs polars installed (pip install polars)") from None
        return polars.from_arrow(table)
    raise PanSurveyError(f"unknown result kind {as_!r}: use arrow, pandas or polars")
