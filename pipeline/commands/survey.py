"""``pans survey SPEC... --out DIR [--impact]``: detect PANs in many models on Ray; rerun to resume.

With ``--impact`` each model's detect task also runs the impact experiments (docs/impact.md) on the
model it has just loaded and the neurons it has just detected; the impact options are those of
``pans impact``.
"""

from __future__ import annotations

import argparse

from pipeline.commands import command
from pipeline.commands.common import add_detect_options, positive_float, positive_int, settings_from_args
from pipeline.commands.impact import add_impact_options, impact_settings_from_args


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a GPU share such as 0.25 or 1, got {text!r}") from None
    if value < 0 or (value > 1 and value % 1):
        raise argparse.ArgumentTypeError(f"expected a fraction of one GPU (0-1) or whole GPUs, got {text!r}")
    return value


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
        type=_share,
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


def _impact_options_without_impact(parser_defaults: dict, args: argparse.Namespace) -> list[str]:
    names = ("images", "labels", "max_images", "controls", "padding_modes", "border_patches", "border_grid",
             "patch_frac")
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) != parser_defaults.get(n)]


@command("survey", help="detect PANs in many models on Ray (resumable; results as Parquet)")
def run(args: argparse.Namespace) -> int:
    from pipeline.errors import PanSurveyError
    from pipeline.sources import collect_specs
    from pipeline.survey import SurveyOptions, run_survey
    from pipeline.survey.progress import print_summary

    impact = None
    if args.impact:
        impact = impact_settings_from_args(args)
    else:
        defaults = argparse.ArgumentParser()
        add_impact_options(defaults)
        stray = _impact_options_without_impact(vars(defaults.parse_args([])), args)
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
    )
    summary = run_survey(specs, args.out, settings_from_args(args), options, impact=impact)
    print_summary(summary)
    # Some failures are normal in a survey; only a run where nothing could be done is an error.
    return 1 if summary.failed and not (summary.done or summary.skipped) else 0
