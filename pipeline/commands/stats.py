"""``pans stats DIR``: the canned cross-model statistics, printed as tables (named queries)."""

from __future__ import annotations

import argparse

from pipeline.commands import command
from pipeline.options import positive_float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="results folder")
    parser.add_argument("--tau", type=positive_float, help="re-classify PANs at this threshold (from the stored own_z)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="print only these named queries (pans query DIR --list names them)"
    )
    parser.add_argument("--max-rows", type=int, default=25, help="rows per table (default 25; 0: all)")
    parser.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format (default table)"
    )


def stats_text(
    directory: str,
    *,
    tau: float | None = None,
    only: list[str] | None = None,
    max_rows: int | None = 25,
    fmt: str = "table",
) -> str:
    """Every canned statistic of ``directory`` rendered in ``fmt``; the work behind ``pans stats``."""
    import json

    import pyarrow.compute as pc

    from analysis import named_queries
    from analysis import open as open_results
    from analysis.named import get
    from analysis.output import render

    queries = [get(name) for name in only] if only else list(named_queries())
    con = open_results(directory, tau=tau, materialize=True)
    if fmt == "table" and not con.execute("SELECT (SELECT count(*) FROM models) + (SELECT count(*) FROM failures)"
                                          ).fetchall()[0][0]:
        return f"{directory}: no results yet (no finished or failed models)\n"
    parts = []
    tables = {}
    for query in queries:
        table = con.sql(f"SELECT * FROM {query.name}").to_arrow_table()
        tables[query.name] = table
        if fmt != "table":
            continue
        # One configuration (the usual case): its id would repeat on every line, so it moves to the header.
        if "config_id" in table.column_names and len(pc.unique(table["config_id"])) <= 1:
            table = table.drop_columns(["config_id"])
        more = f"  (all rows: pans query {directory} @{query.name})" if max_rows and table.num_rows > max_rows else ""
        parts.append(render(table, "table", max_rows=max_rows, title=f"== {query.name}: {query.about}{more}"))
    if fmt == "table":
        configs = [r[0] for r in con.execute("SELECT DISTINCT config_id FROM models ORDER BY 1").fetchall()]
        label = f"tau {tau} (re-classified)" if tau else "stored classification"
        header = f"PAN statistics of {directory}: configuration {', '.join(configs) or '(none)'}; {label}\n"
        return header + "\n".join(parts)
    if fmt == "json":
        from analysis.output import json_value

        return (
            json.dumps(
                {k: [{c: json_value(v) for c, v in r.items()} for r in t.to_pylist()] for k, t in tables.items()},
                indent=1,
            )
            + "\n"
        )
    return "".join(f"# {name}\n{render(t, 'csv')}\n" for name, t in tables.items())


@command("stats", help="print the canned cross-model PAN statistics of a results folder")
def run(args: argparse.Namespace) -> int:
    print(stats_text(args.dir, tau=args.tau, only=args.only, max_rows=args.max_rows or None, fmt=args.format), end="")
    return 0
