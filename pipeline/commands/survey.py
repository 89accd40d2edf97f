"""``pans survey SPEC... --out DIR [--impact]``: detect PANs in many models on Ray; rerun to resume.

With ``--impact`` each model's detect task also runs the impact experiments (docs/impact.md) on the
model it has just loaded and the neurons it has just detected; the impact options are those of
``pans impact``.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.commands import command
from pipeline.commands.common import add_detect_options, settings_from_args
from pipeline.commands.impact import add_impact_options, impact_option_names, impact_settings_from_args
from pipeline.options import gpu_share, positive_float, positive_int


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
    from pipeline.sources import collect_specs
    from pipeline.survey import SurveyOptions, run_survey
    from pipeline.survey.progress import print_summary
    from pipeline.survey.signals import SurveyInterrupted

    impact = None
    if args.impact:
        impact = impact_settings_from_args(args)
    else:
        defaults = argparse.ArgumentParser()
        add_impact_options(defaults)
        given = vars(defaults.parse_args([]))
        stray = ["--" + n.replace("_", "-") for n in impact_option_names() if getattr(args, n) != given[n]]
        if stray:
            raise PanSurveyError(f"{', '.join(stray)} only apply with --impact")
    specs = collect_specs(args.specs, args.models_file)
    options = SurveyOptions(
        address=args.address,
        gpus_per_model=args.gpus_per_model,
        cpus_per_model=args.cpus_per_model,
        max_downloads=args.max_downloads,
        timeout_per_model=args.timeout_per_model,
        random_init=args.random_init,
        progress=args.progress,
        num_cpus=args.num_cpus,
        memory_budget_gb=args.memory_budget,
        wait_for_nodes=args.wait_for_nodes,
    )
    try:
        summary = run_survey(specs, args.out, settings_from_args(args), options, impact=impact)
    except SurveyInterrupted as exc:
        print(f"pans survey: stopped by {exc}; finished models are saved in {args.out}, rerun to resume",
              file=sys.stderr)
        return exc.exit_code
    print_summary(summary)
    # Some failures are normal in a survey; only a run where nothing could be done is an error.
    return 1 if summary.failed and not (summary.done or summary.skipped) else 0
