"""``run_impact``: every registered impact experiment on one loaded model, as Arrow tables.

The intact model is the reference: its logits on the image set, its PANs (from the ``neurons``
table), ``settings.controls`` matched random-neuron controls and the probe means that ablation
clamps to are computed once here (:class:`ImpactRun`) and recorded as the ``intact`` rows. Then
each experiment of :mod:`pipeline.impact.registry` runs in turn on that shared state:
``ablation`` (PANs and matched controls clamped; ``pan_vs_control``), ``padding`` (zero padding
swapped for another mode) and ``border_distance`` (confidence against distance to the border).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch

from pipeline.detect import resolve_device
from pipeline.impact import controls, metrics
from pipeline.impact.ablation import ablated_logits, channel_means, forward_batches
from pipeline.impact.border_distance import Predict
from pipeline.impact.errors import ImpactError
from pipeline.impact.images import ImageSet, load_image_set, model_class_names, resolve_labels
from pipeline.impact.registry import experiments, output_tables
from pipeline.impact.settings import ImpactSettings
from pipeline.schema import table_from_rows
from pipeline.settings import DetectSettings
from pipeline.sources.base import LoadedModel

#: Classes kept per condition in ``impact_classes`` besides those predicted at least once.
TOP_PROB_SHIFTS = 10

@dataclass
class ImpactRun:
    """What every experiment reads (the intact reference, PANs, controls) and where it records rows."""

    model: torch.nn.Module
    settings: ImpactSettings
    images: ImageSet
    base: dict[str, Any]  # model_id, config_id, impact_id: the key columns of every row
    device: torch.device
    intact: torch.Tensor  # logits of the intact model on the image set
    labels: torch.Tensor | None  # class index per image, when the image set has labels
    names: list[str] | None  # class names of the model, when known
    pans: controls.Units
    control_units: list[controls.Units]  # one per control seed (none when there are no PANs)
    means: dict[str, torch.Tensor]  # probe mean of every ablated channel's layer
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # table -> rows recorded so far

    def predict(self) -> Predict:
        """The intact model as a function of images."""
        return lambda x: forward_batches(self.model, x, batch_size=self.settings.batch_size, device=self.device)

    def ablate(self, units: controls.Units) -> Predict:
        """The model with ``units`` clamped to their probe means, as a function of images."""
        return lambda x: ablated_logits(self.model, x, units, self.means, batch_size=self.settings.batch_size,
                                        device=self.device)

    def record(self, experiment: str, condition: str, seed: int | None, values: dict[str, float | None]) -> None:
        """One ``impact`` row per metric."""
        self.add_rows("impact", [{"experiment": experiment, "condition": condition, "seed": seed, "metric": metric,
                                  "value": value} for metric, value in values.items()])

    def record_class_shifts(self, experiment: str, condition: str, seed: int | None, logits: torch.Tensor) -> None:
        """``impact_classes`` rows: how the predicted classes moved from the intact model to ``logits``."""
        self.add_rows("impact_classes", _class_shifts(experiment, condition, seed, self.intact, logits, self.names))

    def add_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Rows of ``table`` (the key columns are added here)."""
        self.rows.setdefault(table, []).extend({**self.base, **row} for row in rows)


def run_impact(
    loaded: LoadedModel,
    neurons: pa.Table,
    settings: ImpactSettings,
    *,
    detect: DetectSettings | None = None,
    probe: torch.Tensor | None = None,
    images: ImageSet | None = None,
) -> dict[str, pa.Table]:
    """Run every registered impact experiment on ``loaded``; returns one table per output table.

    ``neurons`` is the detector's table for this model (its ``config_id`` is carried over).
    ``probe`` (the detection probe, normalised) gives the mean each ablated neuron is clamped to;
    when omitted it is rebuilt from ``detect`` exactly as the detector built it. The tables are
    ``impact``, ``impact_classes``, ``impact_border`` and those of any other registered
    experiment. The model is left unchanged.
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

    intact = forward_batches(model, images.images, batch_size=bs, device=dev)
    num_classes = int(intact.shape[1])
    names = model_class_names(loaded.class_names, num_classes)
    labels = resolve_labels(images.label_names, num_classes, names) if images.label_names else None

    pans = controls.pan_units(neurons)
    # No PANs, nothing to match: controls would ablate nothing.
    n_controls = settings.controls if pans else 0
    control_units = [controls.matched_controls(neurons, pans, seed=settings.seed + i) for i in range(n_controls)]
    layers = set(pans).union(*[set(c) for c in control_units])
    means = channel_means(model, probe, layers, batch_size=bs, device=dev) if layers else {}

    ctx = ImpactRun(model, settings, images, base, dev, intact, labels, names, pans, control_units, means)
    intact_metrics: dict[str, float | None] = {"images": float(len(images)), "pans": float(controls.count(pans))}
    if labels is not None:
        intact_metrics["accuracy"] = metrics.accuracy(intact, labels)
    ctx.record("intact", "intact", None, intact_metrics)
    for experiment in experiments():
        experiment.run(ctx)
    return {name: table_from_rows(name, ctx.rows.get(name, [])) for name in output_tables()}


def check_labels(loaded: LoadedModel, images: ImageSet) -> None:
    """Resolve the image set's labels against the model's classes (one image forward); raises LabelsError."""
    if not images.label_names:
        return
    logits = forward_batches(loaded.model, images.images[:1], batch_size=1, device=torch.device("cpu"))
    num_classes = int(logits.shape[1])
    resolve_labels(images.label_names, num_classes, model_class_names(loaded.class_names, num_classes))


def _class_shifts(experiment: str, condition: str, seed: int | None, intact: torch.Tensor,
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
        {"experiment": experiment, "condition": condition, "seed": seed, "class_index": c,
         "class_name": names[c] if names else None, "intact_count": int(n_ref[c]), "condition_count": int(n_cond[c]),
         "count_delta": int(n_cond[c] - n_ref[c]), "intact_prob": float(p_ref[c]), "condition_prob": float(p_cond[c]),
         "prob_delta": float(delta[c])}
        for c in sorted(keep)
    ]
