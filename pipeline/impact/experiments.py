"""``run_impact``: every impact experiment on one loaded model, as Arrow tables.

Conditions compared with the intact model on the same image set:
- ``pan_ablation``: every PAN of the ``neurons`` table clamped to its mean activation on the probe;
- ``random_control`` (seeds 0..N-1): as many random non-PAN, non-dead neurons from the same layers;
- ``reflect`` / ``replicate`` / ``circular``: the zero padding before every convolution swapped.
The PAN result is also placed in the control distribution (condition ``pan_vs_control``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import torch

from pipeline.detect import resolve_device
from pipeline.impact import border_distance, controls, metrics
from pipeline.impact.ablation import ablated_logits, channel_means, forward_batches
from pipeline.impact.errors import ImpactError
from pipeline.impact.images import ImageSet, load_image_set, model_class_names, resolve_labels
from pipeline.impact.padding import padding_logits
from pipeline.impact.settings import ImpactSettings
from pipeline.schema import table_from_rows
from pipeline.settings import DetectSettings
from pipeline.sources.base import LoadedModel

#: Classes kept per condition in ``impact_classes`` besides those predicted at least once.
TOP_PROB_SHIFTS = 10


def run_impact(
    loaded: LoadedModel,
    neurons: pa.Table,
    settings: ImpactSettings,
    *,
    detect: DetectSettings | None = None,
    probe: torch.Tensor | None = None,
    images: ImageSet | None = None,
) -> dict[str, pa.Table]:
    """Run the ablation, control, padding and border-distance experiments on ``loaded``.

    ``neurons`` is the detector's table for this model (its ``config_id`` is carried over).
    ``probe`` (the detection probe, normalised) gives the mean each ablated neuron is clamped to;
    when omitted it is rebuilt from ``detect`` exactly as the detector built it. Returns the
    tables ``impact``, ``impact_classes`` and ``impact_border``. The model is left unchanged.
    """
    from pipeline.probes import make_probe

    detect = detect or DetectSettings()
    cfg_ids = set(neurons.column("config_id").to_pylist()) if neurons.num_rows else {detect.config_id}
    if len(cfg_ids) != 1:
        raise ImpactError(f"neurons table mixes {len(cfg_ids)} detection configs; pass one model's rows")
    model_ids = set(neurons.column("model_id").to_pylist()) if neurons.num_rows else {loaded.model_id}
    if model_ids != {loaded.model_id}:
        raise ImpactError(f"neurons table is for {sorted(model_ids)[0]}, not {loaded.model_id}")
    base = {"model_id": loaded.model_id, "config_id": cfg_ids.pop(), "impact_id": settings.impact_id}

    pp = loaded.preprocess.with_image_size(detect.image_size)
    if probe is None:
        probe = make_probe(detect.probe, detect.num_images, pp, detect.seed)
    if images is None:
        images = load_image_set(settings.images, pp, labels=settings.labels, max_images=settings.max_images,
                                seed=settings.seed)
    if len(images) == 0:
        raise ImpactError("the image set is empty")
    model, dev, bs = loaded.model, resolve_device(settings.device), settings.batch_size

    def run(on_conv: Callable | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: forward_batches(model, x, batch_size=bs, device=dev, on_conv=on_conv)

    intact = run()(images.images)
    num_classes = int(intact.shape[1])
    names = model_class_names(loaded.class_names, num_classes)
    labels = resolve_labels(images.label_names, num_classes, names) if images.label_names else None

    pans = controls.pan_units(neurons)
    # No PANs, nothing to match: controls would ablate nothing.
    control_units = [controls.matched_controls(neurons, pans, seed=settings.seed + i) for i in range(settings.controls)]
    control_units = control_units if pans else []
    layers = set(pans).union(*[set(c) for c in control_units])
    means = channel_means(model, probe, layers, batch_size=bs, device=dev) if layers else {}

    def ablate(units: controls.Units) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: ablated_logits(model, x, units, means, batch_size=bs, device=dev)

    impact_rows: list[dict[str, Any]] = []
    class_rows: list[dict[str, Any]] = []

    def record(experiment: str, condition: str, seed: int | None, values: dict[str, float | None]) -> None:
        for metric, value in values.items():
            impact_rows.append({**base, "experiment": experiment, "condition": condition, "seed": seed,
                                "metric": metric, "value": value})

    intact_metrics: dict[str, float | None] = {"images": float(len(images)), "pans": float(controls.count(pans))}
    if labels is not None:
        intact_metrics["accuracy"] = metrics.accuracy(intact, labels)
    record("intact", "intact", None, intact_metrics)

    pan_metrics: dict[str, float] | None = None
    if pans:
        logits = ablate(pans)(images.images)
        pan_metrics = metrics.compare(intact, logits, labels)
        record("ablation", "pan_ablation", None, {**pan_metrics, "neurons_ablated": float(controls.count(pans))})
        class_rows += _class_shifts(base, "ablation", "pan_ablation", None, intact, logits, names)
    control_metrics: list[dict[str, float]] = []
    for i, units in enumerate(control_units):
        logits = ablate(units)(images.images)
        m = metrics.compare(intact, logits, labels)
        control_metrics.append(m)
        record("control", "random_control", settings.seed + i, {**m, "neurons_ablated": float(controls.count(units))})
        class_rows += _class_shifts(base, "control", "random_control", settings.seed + i, intact, logits, names)
    if pan_metrics is not None and control_metrics:
        for metric, value in pan_metrics.items():
            placed = metrics.against_controls(metric, value, [c[metric] for c in control_metrics])
            record("ablation", "pan_vs_control", None, {f"{metric}_{k}": v for k, v in placed.items()})

    for mode in settings.padding_modes:
        logits, counts = padding_logits(model, images.images, mode, batch_size=bs, device=dev)
        record("padding", mode, None, {
            **metrics.compare(intact, logits, labels),
            "convs_switched": float(counts.conv_padding + counts.explicit_pad),
            "fallbacks": float(counts.fallbacks),
        })
        class_rows += _class_shifts(base, "padding", mode, None, intact, logits, names)

    border_rows: list[dict[str, Any]] = []
    if settings.border_patches > 0:
        conditions = {"intact": run()}
        if pans:
            conditions["pan_ablation"] = ablate(pans)
        if control_units:
            conditions["random_control"] = ablate(control_units[0])
        patches = border_distance.patches_from(images.images, settings.border_patches, settings.patch_frac)
        rows = border_distance.border_curves(patches, tuple(images.images.shape[-2:]), settings.border_grid,
                                             conditions, reference="intact")
        border_rows = [{**base, **row} for row in rows]
        record("border_distance", "summary", None, {
            f"edge_minus_centre_{name}": border_distance.edge_minus_centre(rows, name) for name in conditions
        })
    return {
        "impact": table_from_rows("impact", impact_rows),
        "impact_classes": table_from_rows("impact_classes", class_rows),
        "impact_border": table_from_rows("impact_border", border_rows),
    }


def check_labels(loaded: LoadedModel, images: ImageSet) -> None:
    """Resolve the image set's labels against the model's classes (one image forward); raises LabelsError."""
    if not images.label_names:
        return
    logits = forward_batches(loaded.model, images.images[:1], batch_size=1, device=torch.device("cpu"))
    num_classes = int(logits.shape[1])
    resolve_labels(images.label_names, num_classes, model_class_names(loaded.class_names, num_classes))


def _class_shifts(base: dict[str, Any], experiment: str, condition: str, seed: int | None, intact: torch.Tensor,
                  logits: torch.Tensor, names: list[str] | None) -> list[dict[str, Any]]:
    """Rows for classes predicted at least once by either model, plus the largest mean-probability shifts."""
    k = intact.shape[1]
    n_ref = torch.bincount(intact.argmax(1), minlength=k)
    n_cond = torch.bincount(logits.argmax(1), minlength=k)
    p_ref = torch.softmax(intact.double(), 1).mean(0)
    p_cond = torch.softmax(logits.double(), 1).mean(0)
    delta = p_cond - p_ref
    keep = set(torch.nonzero((n_ref + n_cond) > 0).flatten().tolist())
    keep |= set(delta.abs().topk(min(TOP_PROB_SHIFTS, k)).indices.tolist())
    return [
        {**base, "experiment": experiment, "condition": condition, "seed": seed, "class_index": c,
         "class_name": names[c] if names else None, "intact_count": int(n_ref[c]), "condition_count": int(n_cond[c]),
         "count_delta": int(n_cond[c] - n_ref[c]), "intact_prob": float(p_ref[c]), "condition_prob": float(p_cond[c]),
         "prob_delta": float(delta[c])}
        for c in sorted(keep)
    ]
