"""``pans detect SPEC --out DIR``: PAN detection for one model, results in a folder."""

from __future__ import annotations

import argparse

from pipeline.commands import command
from pipeline.commands.common import add_detect_options, settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="timm name (resnet50, resnet50.a1_in1k), local-dir:PATH, py:FILE.py:FUNCTION, ...")
    parser.add_argument("--out", required=True, help="results folder (created if missing)")
    add_detect_options(parser)


@command("detect", help="detect PANs in one model and write its results")
def run(args: argparse.Namespace) -> int:
    from functools import partial

    import pyarrow.compute as pc

    from pipeline.runner import run_model
    from pipeline.sources import resolve_spec
    from pipeline.sources.base import former_ids
    from pipeline.store import ResultStore, file_key, new_run_id, run_config, run_record

    settings = settings_from_args(args)
    refs = resolve_spec(args.spec, random_init=args.random_init)
    if len(refs) != 1:
        from pipeline.errors import PanSurveyError

        raise PanSurveyError(f"{args.spec!r} matches {len(refs)} models; `pans detect` takes one (use `pans survey`)")
    ref = refs[0]
    store = ResultStore(args.out)
    # Under its id, or the id an older version gave it (absolute py:/local-dir: paths).
    keys = [file_key(i, settings.config_id) for i in (ref.model_id, *former_ids(ref))]
    stored = [k for k in keys if store.root.is_dir() and store.is_done(k)]
    key = stored[0] if stored else keys[0]
    if stored:  # once per (model, config): show the stored results, whether compacted or not
        tables = {t: store.read_back(t, key) for t in ("layers", "models")}
        print(f"already done in {store.root} under this configuration ({settings.config_id}); stored results:")
    else:
        if store.root.is_dir():
            store.check_not_busy()  # fail before the slow part, not after it
        run_id = new_run_id()
        # A twin of this architecture and input size already in the folder (another tag's) is reused.
        stored_null = partial(store.null_counts, cfg_id=settings.config_id)
        tables = run_model(ref, settings, run_id=run_id, stored_null=stored_null)
        # Only now: a model that fails to load leaves no empty results folder behind.
        with store.writing("detect"):
            config = run_config(settings, random_init=args.random_init)
            store.write("runs", run_id, run_record(run_id, settings.config_id, "detect", [args.spec], config))
            store.write_model(tables, key)

    model = tables["models"].to_pylist()[0]
    padded, pans = model["padded_neurons"], model["pans"]
    share = f"{100 * pans / padded:.1f}%" if padded else "n/a"
    label = "" if model["pretrained"] else "  [random init: untrained weights]"
    print(f"{ref.model_id}{label}")
    print(f"  conv neurons {model['conv_neurons']}, measured {padded}, PANs {pans} ({share} at tau {settings.tau})")
    if model["null_pans"] is not None:
        null, null_padded = model["null_pans"], model["null_padded_neurons"]
        null_share = f"{100 * null / null_padded:.1f}%" if null_padded else "n/a"
        ratio = f"{pans / max(null, 1):.1f}x max(null, 1)"
        if model["null_seconds"] is None:  # not measured with this model: another tag's, from the folder
            about = f"{model['null_model_id']}, reused from {store.root}"
        else:
            about = f"untrained, normalisation {model['null_recalibration'] or 'recalibrated'} on the probe"
        print(f"  null twin ({about}): PANs {null} ({null_share}); {ratio}")
    elif model["recalibration"]:
        print(f"  untrained weights, normalisation recalibrated on the probe ({model['recalibration']}): a null itself")
    if model["skipped_neurons"]:
        h, w = model["image_h"], model["image_w"]
        print(
            f"  skipped {model['skipped_neurons']} neurons: their layers' outputs at a {h}x{w} px input have fewer"
            " than 4 positions clear of the padding (see layers.skipped); a larger --image-size measures them"
        )
    layers = tables["layers"]
    if pans:
        order = pc.sort_indices(layers, sort_keys=[("pans", "descending"), ("layer_index", "ascending")])
        top = [r for r in layers.take(order).slice(0, 5).to_pylist() if r["pans"]]
        print("  layers with most PANs: " + ", ".join(f"{r['layer']} ({r['pans']}/{r['out_channels']})" for r in top))
    print(f"  {model['detect_seconds']:.2f} s on {model['device']}; results in {store.root}")
    return 0
