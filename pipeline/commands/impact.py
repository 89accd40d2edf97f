"""``pans impact SPEC --out DIR``: what a model's PANs (and its zero padding) do to its predictions.

Detects the model's PANs first unless the results folder already holds its neurons for the same
detection settings, then runs the experiments of :mod:`pipeline.impact` and writes the ``impact``,
``impact_classes`` and ``impact_border`` tables. See docs/impact.md.
"""

from __future__ import annotations

import argparse

from pipeline.commands import command
from pipeline.commands.common import add_detect_options, settings_from_args
from pipeline.options import positive_int


def add_impact_options(parser: argparse.ArgumentParser) -> None:
    """Impact options (shared with ``pans survey --impact``): the image set and every experiment's options."""
    from pipeline.impact.registry import all_options
    from pipeline.impact.settings import ImpactSettings

    d = ImpactSettings()
    g = parser.add_argument_group("impact")
    g.add_argument("--images", default=d.images,
                   help="photos (default) or a folder of images (ImageFolder layout gives labels)")
    g.add_argument("--labels", default=d.labels, help="labels file: PATH<TAB>LABEL lines, paths relative to --images")
    g.add_argument("--max-images", type=positive_int, default=d.max_images,
                   help=f"images compared (default {d.max_images}; folders: a seeded sample)")
    for option in all_options():
        option.add_to(g)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="one model: timm name, local-dir:PATH, py:FILE.py:FUNCTION, ...")
    parser.add_argument("--out", required=True, help="results folder (created if missing)")
    add_impact_options(parser)
    add_detect_options(parser)


@command("impact", help="ablate a model's PANs, swap its padding, and measure what changes in its predictions")
def run(args: argparse.Namespace) -> int:
    import time
    from functools import partial

    from pipeline.errors import PanSurveyError
    from pipeline.impact.experiments import check_labels, run_impact
    from pipeline.impact.images import load_image_set
    from pipeline.impact.settings import ImpactSettings, impact_key, impact_run_config, run_config_id
    from pipeline.runner import detect_loaded
    from pipeline.sources import load_model, resolve_spec
    from pipeline.store import ResultStore, file_key, new_run_id, run_config, run_record

    detect = settings_from_args(args)
    settings = ImpactSettings.from_args(args)
    refs = resolve_spec(args.spec, random_init=args.random_init)
    if len(refs) != 1:
        raise PanSurveyError(f"{args.spec!r} matches {len(refs)} models; `pans impact` takes one "
                             "(use `pans survey --impact`)")
    store = ResultStore(args.out)
    run_id = new_run_id()
    started = time.perf_counter()
    loaded = load_model(refs[0])
    images = load_image_set(settings.images, loaded.preprocess.with_image_size(detect.image_size),
                            labels=settings.labels, max_images=settings.max_images, seed=settings.seed)
    check_labels(loaded, images)  # fail on bad labels before the slow part
    config = run_config(detect, random_init=args.random_init, **impact_run_config(detect, settings))
    # Only now (inputs checked): bad input leaves no empty results folder behind.
    with store.writing("impact"):
        key = file_key(loaded.model_id, detect.config_id)
        neurons = store.read_back("neurons", key)  # the stored detection, own files or compacted
        reused = neurons is not None
        if neurons is None:
            stored_null = partial(store.null_counts, cfg_id=detect.config_id)  # a twin another tag measured
            detected = detect_loaded(
                loaded, detect, load_seconds=time.perf_counter() - started, run_id=run_id, stored_null=stored_null
            )
            store.write_model(detected, key)  # detection first: it stands even if an experiment fails
            neurons = detected["neurons"]
        store.write("runs", run_id, run_record(run_id, run_config_id(detect, settings), "impact", [args.spec], config))
        tables = run_impact(loaded, neurons, settings, detect=detect, images=images)
        store.write_impact(tables, impact_key(loaded.model_id, detect.config_id, settings.impact_id))
    _print_summary(loaded.model_id, tables["impact"].to_pylist(), reused, store.root)
    return 0


def _print_summary(model_id: str, rows: list[dict], reused: bool, root) -> None:
    def value(condition: str, metric: str) -> float | None:
        hits = [r["value"] for r in rows if r["condition"] == condition and r["metric"] == metric]
        return hits[0] if hits else None

    def fmt(v: float | None, spec: str = ".3f") -> str:
        return "n/a" if v is None else format(v, spec)

    pans = value("intact", "pans") or 0
    print(f"{model_id}: {int(value('intact', 'images') or 0)} images, {int(pans)} PANs"
          f"{' (detection reused)' if reused else ''}")
    acc = value("intact", "accuracy")
    if acc is not None:
        print(f"  intact accuracy {acc:.3f}")
    if pans:
        line = (f"  PAN ablation: top-1 agreement {fmt(value('pan_ablation', 'top1_agreement'))}, "
                f"KL {fmt(value('pan_ablation', 'kl'), '.4f')}")
        if acc is not None:
            line += f", accuracy {fmt(value('pan_ablation', 'accuracy'))}"
        print(line)
        mean = value("pan_vs_control", "kl_control_mean")
        if mean is not None:
            print(f"  controls: KL mean {mean:.4f} (std {fmt(value('pan_vs_control', 'kl_control_std'), '.4f')}); "
                  f"PAN KL z {fmt(value('pan_vs_control', 'kl_z'), '.2f')}, "
                  f"percentile {fmt(value('pan_vs_control', 'kl_percentile'), '.0f')}")
    for mode in ("reflect", "replicate", "circular"):
        agree = value(mode, "top1_agreement")
        if agree is not None:
            print(f"  {mode} padding: top-1 agreement {agree:.3f}, KL {fmt(value(mode, 'kl'), '.4f')}")
    print(f"  results in {root}")
