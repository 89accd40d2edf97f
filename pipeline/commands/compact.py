"""``pans compact DIR``: merge a results folder's many small files into a few large ones."""

from __future__ import annotations

import argparse

from pipeline.commands import command
from pipeline.commands.common import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.compact import DEFAULT_FILE_ROWS, DEFAULT_ROW_GROUP_ROWS

    parser.add_argument("dir", help="results folder written by pans survey / pans detect")
    parser.add_argument(
        "--row-group-rows",
        type=positive_int,
        default=DEFAULT_ROW_GROUP_ROWS,
        help=f"rows per Parquet row group (default {DEFAULT_ROW_GROUP_ROWS:,})",
    )
    parser.add_argument(
        "--file-rows",
        type=positive_int,
        default=DEFAULT_FILE_ROWS,
        help=f"rows per output file at most (default {DEFAULT_FILE_ROWS:,})",
    )


@command("compact", help="merge per-model result files into a few large ones (same query results; resume still works)")
def run(args: argparse.Namespace) -> int:
    from pipeline.compact import compact

    report = compact(args.dir, row_group_rows=args.row_group_rows, file_rows=args.file_rows)
    if report.recovered:
        print(f"finished {report.recovered} interrupted compaction(s)")
    if not report.models:
        print(f"{report.root}: nothing to compact (no per-model files of finished models)")
        return 0
    print(f"{report.root}: merged the files of {report.models} models")
    for table, tr in report.tables.items():
        files = f"{tr.files_in:6d} files -> {tr.files_out} file(s)"
        print(f"  {table:12s} {files}, {tr.rows:,} rows in {tr.row_groups} row group(s)")
    return 0
