"""``pans report DIR --out report.html``: one self-contained HTML page of plots over a results folder."""

from __future__ import annotations

import argparse

from pipeline.commands import command
from pipeline.options import positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="results folder")
    parser.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    parser.add_argument("--config", help="configuration (config_id) to show; default: the one with the most models")
    parser.add_argument("--tau", type=positive_float, help="re-classify PANs at this threshold (from the stored own_z)")
    parser.add_argument(
        "--top-k", type=positive_int, default=30, help="models shown by name in per-model plots (default 30)"
    )


@command("report", help="write an HTML report (plots and tables, images embedded) of a results folder")
def run(args: argparse.Namespace) -> int:
    from analysis.report import build_report

    path = build_report(args.dir, args.out, config=args.config, tau=args.tau, top_k=args.top_k)
    size = path.stat().st_size / 1e6
    print(f"report written to {path} ({size:.1f} MB)")
    return 0
