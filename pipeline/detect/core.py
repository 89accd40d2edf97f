"""``detect_pans``: one model, one probe batch set, per-neuron border statistics out."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch
import torch.nn as nn

from pipeline.detect.classify import dead_mask, pan_sides, pan_sign, side_label
from pipeline.detect.layer import REFERENCES, LayerInfo, LayerStats
from pipeline.detect.tracer import ConvCall, ConvTracer
from pipeline.errors import PanSurveyError
from pipeline.schema import SIDES, table_from_rows
from pipeline.settings import DEFAULT_TAU


@dataclass
class DetectionResult:
    """Arrow tables of one detection, plus the counts that go into the ``models`` row."""

    neurons: pa.Table
    layers: pa.Table
    summary: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PanSurveyError(f"--device {device}: CUDA is not available on this machine (use auto or cpu)")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise PanSurveyError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from exc


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
    eval mode and moved to ``device``; it is left there.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise PanSurveyError(f"probe must be a non-empty (N, C, H, W) batch, got shape {tuple(images.shape)}")
    if reference not in REFERENCES:
        raise PanSurveyError(f"unknown reference padding {reference!r} (use {', '.join(REFERENCES)})")
    if batch_size < 1:
        raise PanSurveyError("batch size must be at least 1")
    dev = resolve_device(device)
    model.eval().to(dev)
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


def _f(v: float) -> float | None:
    return None if math.isnan(v) else v


def _tables(
    recorder: _Recorder, *, tau: float, model_id: str, config_id: str, seconds: float, device: str
) -> DetectionResult:
    neuron_rows: list[dict[str, Any]] = []
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
            totals["padded_layers"] += 1
            totals["padded_neurons"] += info.out_channels
            res = stats.finish()
            scale = res["scale"]
            dead = dead_mask(scale)
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))
            for k in range(info.out_channels):
                s_k = float(scale[k])
                own = {s: float(res[f"own_{s}"][k] / safe[k]) for s in SIDES}
                obs = {s: float(res[f"obs_{s}"][k] / safe[k]) for s in SIDES}
                max_own = max((abs(v) for v in own.values() if not math.isnan(v)), default=float("nan"))
                max_obs = max((abs(v) for v in obs.values() if not math.isnan(v)), default=float("nan"))
                is_dead = bool(dead[k])
                sides = [] if is_dead else pan_sides(own, tau)
                is_pan = bool(sides)
                informed = not is_pan and not is_dead and not math.isnan(max_obs) and max_obs >= tau
                layer_pans += is_pan
                totals["dead_neurons"] += is_dead
                totals["border_informed"] += informed
                row: dict[str, Any] = {
                    "model_id": model_id,
                    "config_id": config_id,
                    "layer": info.layer,
                    "layer_index": info.index,
                    "channel": k,
                    "scale": s_k,
                    "interior_mean": float(res["interior_mean"][k]),
                    "max_abs_own_z": _f(max_own),
                    "max_abs_obs_z": _f(max_obs),
                    "dead": is_dead,
                    "is_pan": is_pan,
                    "pan_sides": side_label(sides),
                    "pan_sign": pan_sign(own, sides),
                    "border_informed": informed,
                    "kernel": res["kernel"][k].tolist() if "kernel" in res else None,
                }
                for s in SIDES:
                    row[f"own_z_{s}"] = _f(own[s])
                    row[f"obs_z_{s}"] = _f(obs[s])
                    row[f"kmass_{s}"] = _f(float(res[f"kmass_{s}"][k]))
                neuron_rows.append(row)
            totals["pans"] += layer_pans
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
                "kernel_h": info.kernel[0],
                "kernel_w": info.kernel[1],
                "stride_h": info.stride[0],
                "stride_w": info.stride[1],
                "dilation_h": info.dilation[0],
                "dilation_w": info.dilation[1],
                **{f"pad_{s}": p for s, p in zip(SIDES, info.pads, strict=True)},
                "padding_kind": info.padding_kind,
                "padding_mode": info.padding_mode,
                "in_h": info.in_size[0],
                "in_w": info.in_size[1],
                "out_h": g.out_shape[0],
                "out_w": g.out_shape[1],
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
    return DetectionResult(table_from_rows("neurons", neuron_rows), table_from_rows("layers", layer_rows), summary)
