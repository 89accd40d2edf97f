"""``detect_pans``: one model, one probe batch set, per-neuron border statistics out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn as nn

from pipeline.detect.classify import classify, dead_mask, pan_rule
from pipeline.detect.layer import REFERENCES, LayerInfo, LayerStats
from pipeline.detect.layout import on_device, to_fastest_layout
from pipeline.detect.tracer import ConvCall, ConvTracer
from pipeline.errors import PanSurveyError
from pipeline.schema import NEURONS, SIDES, table_from_rows
from pipeline.settings import DEFAULT_TAU


@dataclass
class DetectionResult:
    """Arrow tables of one detection, plus the counts that go into the ``models`` row."""

    neurons: pa.Table
    layers: pa.Table
    summary: dict[str, Any] = field(default_factory=dict)


def check_device(device: str) -> None:
    """Fail on a device spec that is not auto, cpu, cuda or cuda:N, whatever this machine has.

    What a driver can check for a cluster whose nodes may have GPUs the driver lacks.
    """
    if device == "auto":
        return
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise PanSurveyError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from exc


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PanSurveyError(f"--device {device}: CUDA is not available on this machine (use auto or cpu)")
    return torch.device(device)


class _Recorder:
    """Collects layer infos in call order and updates the statistics of measured layers."""

    def __init__(self, device: torch.device, reference: str) -> None:
        self.device = device
        self.reference = reference
        self.infos: dict[str, LayerInfo] = {}
        self.stats: dict[str, LayerStats] = {}

    def __call__(self, call: ConvCall) -> None:
        info = self.infos.get(call.layer)
        if info is None:
            info = LayerInfo.from_call(call, index=len(self.infos))
            self.infos[call.layer] = info
            if info.skip_reason is None:
                self.stats[call.layer] = LayerStats(info, call.out.device, self.reference)
        elif info.in_size != LayerInfo.from_call(call, info.index).in_size:
            raise PanSurveyError(f"layer {call.layer} saw inputs of different sizes across batches")
        stats = self.stats.get(call.layer)
        if stats is not None:
            stats.update(call)


@torch.no_grad()
def detect_pans(
    model: nn.Module,
    images: torch.Tensor,
    *,
    tau: float = DEFAULT_TAU,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    model_id: str = "model",
    config_id: str = "",
    reference: str = "replicate",
) -> DetectionResult:
    """Measure every padded convolution of ``model`` on ``images`` (N, C, H, W, normalised).

    One forward pass per batch; statistics are reduced inside the pass. The model is put in
    eval mode and moved to ``device``, in the layout it runs fastest in there
    (:mod:`pipeline.detect.layout`: a BatchNorm net's weights channels-last on CPU); it is left so.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise PanSurveyError(f"probe must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    if reference not in REFERENCES:
        raise PanSurveyError(f"unknown reference padding {reference!r} (use {', '.join(REFERENCES)})")
    if batch_size < 1:
        raise PanSurveyError("batch size must be at least 1")
    dev = resolve_device(device)
    to_fastest_layout(on_device(model.eval(), dev), dev)
    recorder = _Recorder(dev, reference)
    started = time.perf_counter()
    with ConvTracer(model, recorder) as tracer:
        for start in range(0, images.shape[0], batch_size):
            tracer.new_pass()
            model(images[start : start + batch_size].to(dev))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - started
    return _tables(recorder, tau=tau, model_id=model_id, config_id=config_id, seconds=seconds, device=str(dev))


def _f32(a: np.ndarray) -> pa.Array:
    """A float32 column with NaN as NULL, straight from numpy (no per-value Python objects)."""
    return pa.array(np.asarray(a, dtype=np.float32), mask=np.isnan(a))


def _neuron_columns(
    info: LayerInfo, res: dict[str, torch.Tensor], tau: float, model_id: str, config_id: str
) -> dict[str, pa.Array | list]:
    """Per-neuron columns of one layer, computed on whole vectors (no per-neuron Python math)."""
    k = info.out_channels
    scale = res["scale"].numpy()
    dead = dead_mask(scale)
    safe = np.where(scale > 0, scale, 1.0)[:, None]
    own = np.stack([res[f"own_{s}"].numpy() for s in SIDES], axis=1) / safe  # (k, 4), NaN: empty strip
    obs = np.stack([res[f"obs_{s}"].numpy() for s in SIDES], axis=1) / safe
    with np.errstate(invalid="ignore"):
        max_own = np.abs(own).max(axis=1, initial=-1.0, where=~np.isnan(own))
        max_obs = np.abs(obs).max(axis=1, initial=-1.0, where=~np.isnan(obs))
    cls = classify(own, obs, dead, tau, pan_rule(info.padding_mode))
    if "kernel" in res:
        kernel = res["kernel"].numpy().astype(np.float32)
        offsets = pa.array(np.arange(k + 1, dtype=np.int32) * kernel.shape[1])
        kernels: pa.Array | list = pa.ListArray.from_arrays(offsets, pa.array(kernel.reshape(-1)))
    else:
        kernels = [None] * k
    cols: dict[str, pa.Array | list] = {
        "model_id": [model_id] * k,
        "config_id": [config_id] * k,
        "layer": [info.layer] * k,
        "layer_index": pa.array(np.full(k, info.index, dtype=np.int32)),
        "channel": pa.array(np.arange(k, dtype=np.int32)),
        "scale": _f32(scale),
        "interior_mean": _f32(res["interior_mean"].numpy()),
        "max_abs_own_z": _f32(np.where(max_own < 0, np.nan, max_own)),
        "max_abs_obs_z": _f32(np.where(max_obs < 0, np.nan, max_obs)),
        "dead": pa.array(dead),
        "is_pan": pa.array(cls["is_pan"]),
        "pan_sides": pa.array(cls["pan_sides"], pa.string()),
        "pan_sign": pa.array(cls["pan_sign"], pa.string()),
        "border_informed": pa.array(cls["border_informed"]),
        "pan_rule": pa.array(cls["pan_rule"], pa.string()),
        "kernel": kernels,
    }
    for i, side in enumerate(SIDES):
        cols[f"own_z_{side}"] = _f32(own[:, i])
        cols[f"obs_z_{side}"] = _f32(obs[:, i])
        cols[f"kmass_{side}"] = _f32(res[f"kmass_{side}"].numpy())
    return cols


def _tables(
    recorder: _Recorder, *, tau: float, model_id: str, config_id: str, seconds: float, device: str
) -> DetectionResult:
    neuron_parts: list[pa.Table] = []
    layer_rows: list[dict[str, Any]] = []
    n_layers = len(recorder.infos)
    totals = {"conv_neurons": 0, "padded_neurons": 0, "skipped_neurons": 0, "pans": 0, "dead_neurons": 0}
    totals.update({"border_informed": 0, "padded_layers": 0})
    for info in recorder.infos.values():
        totals["conv_neurons"] += info.out_channels
        stats = recorder.stats.get(info.layer)
        layer_pans = 0
        if info.in_scope and stats is None:
            totals["skipped_neurons"] += info.out_channels
        if stats is not None:
            cols = _neuron_columns(info, stats.finish(), tau, model_id, config_id)
            layer_pans = int(pc.sum(cols["is_pan"]).as_py())
            totals["padded_layers"] += 1
            totals["padded_neurons"] += info.out_channels
            totals["pans"] += layer_pans
            totals["dead_neurons"] += int(pc.sum(cols["dead"]).as_py())
            totals["border_informed"] += int(pc.sum(cols["border_informed"]).as_py())
            neuron_parts.append(pa.Table.from_pydict(cols, schema=NEURONS))
        g = info.geometry
        strips = g.strips()
        layer_rows.append(
            {
                "model_id": model_id,
                "config_id": config_id,
                "layer": info.layer,
                "layer_index": info.index,
                "relative_depth": info.index / (n_layers - 1) if n_layers > 1 else 0.0,
                "module_type": info.module_type,
                "conv_type": info.conv_type,
                "in_channels": info.in_channels,
                "out_channels": info.out_channels,
                "groups": info.groups,
                **_hw("kernel", info.kernel),
                **_hw("stride", info.stride),
                **_hw("dilation", info.dilation),
                **{f"pad_{s}": p for s, p in zip(SIDES, info.pads, strict=True)},
                "padding_kind": info.padding_kind,
                "padding_mode": info.padding_mode,
                **_hw("in", info.in_size),
                **_hw("out", g.out_shape),
                **{f"strip_{s}": strips[s] for s in SIDES},
                "in_scope": info.in_scope,
                "skipped": info.skip_reason,
                "pans": layer_pans,
            }
        )
    summary = {
        **totals,
        "conv_layers": n_layers,
        "detect_seconds": seconds,
        "device": device,
        "tau": tau,
    }
    neurons = pa.concat_tables(neuron_parts) if neuron_parts else NEURONS.empty_table()
    return DetectionResult(neurons, table_from_rows("layers", layer_rows), summary)


def _hw(name: str, pair: tuple[int, int]) -> dict[str, int]:
    """A (height, width) pair as the ``layers`` table's ``NAME_h`` and ``NAME_w`` columns."""
    return {f"{name}_h": pair[0], f"{name}_w": pair[1]}
