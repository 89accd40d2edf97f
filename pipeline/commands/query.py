"""``pans query DIR "SQL"``: read-only SQL over a results folder (views, macros, named queries)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commands import command
from pipeline.options import positive_float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="results folder (local, or s3://... / gs://... / https://... via DuckDB httpfs)")
    parser.add_argument(
        "sql",
        nargs="?",
        help="one SELECT over the views (models, layers, neurons, failures, runs, impact, ...), or @NAME "
        "for a named query (e.g. @pans_per_model); see --list",
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default=None,
        help="output format (default: from the --output file's extension, .csv or .json; else table)",
    )
    parser.add_argument("--output", "-o", help="write the result to this file instead of printing it")
    parser.add_argument(
        "--max-rows", type=int, default=200, help="rows shown by --format table (default 200; 0: all); files get all"
    )
    parser.add_argument("--tau", type=positive_float, help="re-classify PANs at this threshold for the named queries")
    parser.add_argument("--list", action="store_true", help="list the named queries and views, then exit")


def _list() -> str:
    import pyarrow as pa

    from analysis import named_queries
    from analysis.named import report_queries
    from analysis.output import render_table
    from pipeline.schema import TABLES

    def listing(queries, title: str) -> str:
        return render_table(pa.table({"name": ["@" + q.name for q in queries], "about": [q.about for q in queries]}),
                            title=title)

    views = [*TABLES, "neurons_classified", "neuron_groups", "layer_groups", "named_queries"]
    macros = [
        "pans_at(tau)",
        "pans_per_model_at(tau)",
        "pan_count_sweep([tau, ...])",
        "pan_type(sides)",
        "pan_family(name)",
        "pans_by_layer(key[, detail := ...])",
    ]
    return (
        listing(named_queries(), "Named queries (pans query DIR @NAME, or SELECT ... FROM NAME; in pans stats):")
        + "\n"
        + listing(report_queries(), "Named queries the report draws from (same use; not printed by pans stats):")
        + "\nViews: "
        + ", ".join(views)
        + "\nTable and scalar macros: "
        + ", ".join(macros)
        + "\nMore in docs/analysis.md.\n"
    )


@command("query", help="run read-only SQL (or a named query, @NAME) over a results folder")
def run(args: argparse.Namespace) -> int:
    import duckdb

    from analysis import open as open_results
    from analysis import resolve_sql
    from analysis.guard import check_read_only
    from analysis.output import render
    from pipeline.errors import PanSurveyError, one_line

    con = open_results(args.dir, tau=args.tau, lockdown=True)
    if args.list:
        print(_list(), end="")
        return 0
    if not args.sql or not args.sql.strip():
        raise PanSurveyError('give a SQL query or @NAME (pans query DIR "SELECT * FROM models"; --list shows names)')
    sql = resolve_sql(args.sql)
    check_read_only(con, sql)
    try:
        table = con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise PanSurveyError(f"query failed: {one_line(exc, 2000, first_line_only=True)}") from None
    fmt = args.format or _format_of(args.output)
    if args.output:
        text = render(table, fmt)
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise PanSurveyError(f"cannot write {args.output}: {exc.strerror}") from None
        print(f"{table.num_rows} rows written to {args.output}")
        return 0
    print(render(table, fmt, max_rows=args.max_rows or None), end="")
    return 0


def _format_of(output: str | None) -> str:
    """``results.csv`` -> csv, ``results.json`` -> json; a table otherwise (what a terminal shows)."""
    suffix = Path(output).suffix.lower() if output else ""
    return {".csv": "csv", ".json": "json"}.get(suffix, "table")
