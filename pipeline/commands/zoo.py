"""``pans zoo SPEC...``: what specs resolve to, without downloading weights.

Architectures are built on the meta device (no memory, no download) to count parameters and
to tell whether a model has padded convolutions at all. ``hf-hub:`` specs fetch only their small
``config.json`` (from the cache when offline).
"""

from __future__ import annotations

import argparse
import json

from pipeline.commands import command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "specs",
        nargs="*",
        metavar="SPEC",
        help="timm names or wildcards ('resnet*', '*.in1k'), hf-hub:ORG/NAME, torchvision:NAME[:WEIGHTS], "
        "local-dir:PATH, py:FILE.py:FUNCTION",
    )
    parser.add_argument("--models-file", help="a file of specs, one per line (# comments)")
    parser.add_argument("--random-init", action="store_true", help="architectures with random weights")
    parser.add_argument("--offline", action="store_true", help="use the local caches only (sets HF_HUB_OFFLINE=1)")
    parser.add_argument("--no-inspect", action="store_true", help="skip building architectures (faster for big lists)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f}M" if n >= 1e5 else str(n)


def _fmt_floats(values: list[float]) -> str:
    return ",".join(f"{v:.3g}" for v in values)


def _padded(row: dict) -> str:
    if row["has_padded_convs"] is None:
        return "?"
    return f"yes ({row['padded_convs']}/{row['conv_layers']})" if row["has_padded_convs"] else "no"


@command("zoo", help="list what model specs resolve to (no weight downloads)")
def run(args: argparse.Namespace) -> int:
    from pipeline.sources import collect_specs, describe, resolve_specs, set_offline

    if args.offline:
        set_offline(True)
    refs = resolve_specs(collect_specs(args.specs, args.models_file), random_init=args.random_init)
    rows = [describe(ref, inspect=not args.no_inspect) for ref in refs]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    header = ("model_id", "architecture", "tag", "source", "input", "mean / std", "license", "params", "padded convs")
    table = [header]
    for r in rows:
        size = "x".join(str(v) for v in r["input_size"][1:])
        table.append(
            (
                r["model_id"],
                r["architecture"],
                r["pretrained_tag"] or "-",
                r["source"],
                size,
                f"{_fmt_floats(r['mean'])} / {_fmt_floats(r['std'])}",
                r["license"] or "-",
                _fmt_params(r["num_params"]),
                _padded(r),
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    notes = [(r["model_id"], r["note"]) for r in rows if r["note"]]
    for model_id, note in notes:
        print(f"note: {model_id}: {note}")
    print(f"{len(rows)} model(s)")
    return 0
