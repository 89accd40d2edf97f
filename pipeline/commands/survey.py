"""``pans survey SPEC... --out DIR [--impact]``: detect PANs in many models on Ray; rerun to resume.

With ``--impact`` each model's detect task also runs the impact experiments (docs/impact.md) on the
model it has just loaded and the neurons it has just detected; the impact options are those of
``pans impact``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from pipeline.commands import command
from pipeline.commands.common import add_detect_options, settings_from_args
from pipeline.commands.impact import add_impact_options
from pipeline.options import gpu_share, positive_float, positive_int

if TYPE_CHECKING:
    from pipeline.survey.records import SurveySummary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "specs", nargs="*", metavar="SPEC", help="models: timm names or wildcards, hf-hub:..., py:..., ..."
    )
    parser.add_argument("--models-file", help="a file of specs, one per line (# comments)")
    parser.add_argument("--out", required=True, help="results folder (created if missing; rerun to resume)")
    g = parser.add_argument_group("cluster")
    g.add_argument(
        "--address",
        help="join a running Ray cluster (auto, HOST:PORT, ray://HOST:10001); default: "
        "RAY_ADDRESS when set, else a local runtime sized to this machine",
    )
    g.add_argument(
        "--gpus-per-model",
        type=gpu_share,
        default=None,
        help="GPU share of one detect task (default: 0.25 when the cluster has GPUs, else CPU); "
        "set it on autoscaling clusters whose GPU nodes are not up yet",
    )
    g.add_argument("--cpus-per-model", type=positive_float, default=1.0, help="CPUs per detect task (default 1)")
    g.add_argument("--max-downloads", type=positive_int, default=4, help="weight downloads at once (default 4)")
    g.add_argument(
        "--timeout-per-model",
        type=positive_float,
        default=None,
        metavar="S",
        help="cancel a model's detection after S seconds and record it as failed (default: none)",
    )
    g.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs of the local runtime (default: all)")
    g.add_argument(
        "--memory-budget",
        type=positive_float,
        default=None,
        metavar="GB",
        help="host memory the local runtime gives to models (default: $PANS_SURVEY_MEMORY_GB, else Ray's share "
        "of RAM); models are scheduled so their estimates fit, a model bigger than every node fails at once",
    )
    g.add_argument(
        "--wait-for-nodes",
        type=positive_float,
        default=None,
        metavar="S",
        help="on a cluster that can grow, wait at most S seconds for nodes that can run a model "
        "(default: wait on an autoscaling cluster, fail at once otherwise)",
    )
    g.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "off"),
        default="auto",
        help="live bar on a terminal, a line per model in logs (default auto)",
    )
    add_detect_options(parser)
    parser.add_argument(
        "--impact",
        action="store_true",
        help="also run the impact experiments on each model (PAN ablation, controls, padding, border distance)",
    )
    add_impact_options(parser)


@command("survey", help="detect PANs in many models on Ray (resumable; results as Parquet)")
def run(args: argparse.Namespace) -> int:
    from pipeline.errors import PanSurveyError
    from pipeline.impact.settings import ImpactSettings
    from pipeline.settings import DetectSettings
    from pipeline.sources import collect_specs
    from pipeline.survey import SurveyOptions, run_survey
    from pipeline.survey.signals import SurveyInterrupted

    impact = None
    if args.impact:
        impact = ImpactSettings.from_args(args)
    else:  # an impact-only option given without --impact: say so rather than ignore it
        defaults, shared = ImpactSettings().to_dict(), DetectSettings.field_names()
        stray = [
            "--" + n.replace("_", "-")
            for n in ImpactSettings.field_names()
            if n not in shared and getattr(args, n) != defaults[n]
        ]
        if stray:
            raise PanSurveyError(f"{', '.join(stray)} only apply with --impact")
    specs = collect_specs(args.specs, args.models_file)
    try:
        summary = run_survey(specs, args.out, settings_from_args(args), SurveyOptions.from_args(args), impact=impact)
    except SurveyInterrupted as exc:
        print(f"pans survey: stopped by {exc}; finished models are saved in {args.out}, rerun to resume",
              file=sys.stderr)
        return exc.exit_code
    print_summary(summary)
    # Some failures are normal in a survey; only a run where nothing could be done is an error.
    return 1 if summary.failed and not (summary.done or summary.skipped) else 0


def print_summary(summary: SurveySummary, stream: TextIO | None = None) -> None:
    """The final table: what was surveyed, what failed, and where the results are."""
    from rich.console import Console
    from rich.table import Table

    from pipeline.survey.progress import event_line

    console = Console(file=stream or sys.stdout, width=120, soft_wrap=False)
    table = Table(title=f"survey {summary.run_id}  (config {summary.config_id})", show_header=True)
    table.add_column("models", justify="right")
    table.add_column("done", justify="right")
    table.add_column("skipped (already done)", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("PANs", justify="right")
    table.add_column("padded neurons", justify="right")
    table.add_column("wall", justify="right")
    table.add_column("models/min", justify="right")
    per_min = summary.done / summary.wall_seconds * 60 if summary.wall_seconds > 0 else 0.0
    table.add_row(
        str(summary.requested),
        str(summary.done),
        str(summary.skipped),
        str(summary.failed),
        str(summary.pans),
        str(summary.padded_neurons),
        f"{summary.wall_seconds:.1f} s",
        f"{per_min:.1f}",
    )
    console.print(table)
    failures = [r for r in summary.models if r.status == "failed"]
    for rec in failures[:10]:
        console.print(f"  failed: {event_line(rec)}", markup=False, soft_wrap=True)
    if len(failures) > 10:
        console.print(f"  ... and {len(failures) - 10} more (see {summary.out}/failures/)", markup=False)
    console.print(
        f"folder total for this config: {summary.folder_models} models, {summary.folder_pans} PANs", markup=False
    )
    console.print(f"results: {summary.out}  (neurons/ layers/ models/ failures/ runs/)", markup=False)
    if summary.impact_id:
        console.print(f"impact:  {summary.out}/impact*/  (impact settings {summary.impact_id})", markup=False)
    console.print(f"report:  pans report {summary.out} --out {summary.out}/report.html", markup=False)
    console.print(f"query:   pans query {summary.out} @pans_per_model", markup=False)
    if summary.log:
        console.print(f"log:     {summary.log}  (Ray's own output, full error texts)", markup=False)
