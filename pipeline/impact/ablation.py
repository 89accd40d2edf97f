"""Forward passes with some convolution output channels replaced by constants.

The replacement happens on the output of the convolution itself (before any normalisation or
activation), at exactly the places the detector measured: both use
:class:`pipeline.detect.tracer.ConvTracer`, so a layer name from the ``neurons`` table (the module
path from ``named_modules``, with ``@2`` for the second convolution run inside the same module in
one forward pass) means the same call here. The tracer's hooks exist only inside
:func:`forward_batches`, so the model is exactly as it was afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from pipeline.detect.tracer import ConvCall, ConvTracer
from pipeline.impact.errors import ImpactError

#: Neurons to ablate: layer name -> output channels.
Units = Mapping[str, Sequence[int]]

OnConv = Callable[[ConvCall], None]


def as_logits(output: object) -> torch.Tensor:
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ImpactError(f"impact needs a classifier returning (N, classes) logits; the model returned {shape}")
    return output


@torch.no_grad()
def forward_batches(
    model: nn.Module, images: torch.Tensor, *, batch_size: int, device: torch.device, on_conv: OnConv | None = None
) -> torch.Tensor:
    """Logits (N, classes) as float32 on the CPU; ``on_conv`` sees (and may edit) every conv output."""
    model.eval().to(device)
    out: list[torch.Tensor] = []
    if on_conv is None:
        for start in range(0, images.shape[0], batch_size):
            out.append(as_logits(model(images[start : start + batch_size].to(device))).float().cpu())
        return torch.cat(out)
    with ConvTracer(model, on_conv) as tracer:
        for start in range(0, images.shape[0], batch_size):
            tracer.new_pass()
            out.append(as_logits(model(images[start : start + batch_size].to(device))).float().cpu())
    return torch.cat(out)


class MeanRecorder:
    """``on_conv`` that accumulates each channel's mean output (over batch and positions) of chosen layers."""

    def __init__(self, layers: set[str]) -> None:
        self.layers = layers
        self._sum: dict[str, torch.Tensor] = {}
        self._count: dict[str, int] = {}

    def __call__(self, call: ConvCall) -> None:
        if call.layer not in self.layers:
            return
        out = call.out
        total = out.double().sum(dim=(0, 2, 3))
        self._sum[call.layer] = self._sum.get(call.layer, 0) + total
        self._count[call.layer] = self._count.get(call.layer, 0) + out.shape[0] * out.shape[2] * out.shape[3]

    def means(self) -> dict[str, torch.Tensor]:
        missing = sorted(self.layers - set(self._sum))
        if missing:
            raise ImpactError(f"layers of the neurons table never ran in this model: {', '.join(missing[:5])}"
                              " (was the table made for another model or input size?)")
        return {name: (self._sum[name] / self._count[name]).float().cpu() for name in self._sum}


class ChannelReplacer:
    """``on_conv`` that overwrites chosen output channels with fixed values (one per channel)."""

    def __init__(self, units: Units, values: Mapping[str, torch.Tensor]) -> None:
        self._edits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer, channels in units.items():
            if not channels:
                continue
            if layer not in values:
                raise ImpactError(f"no replacement values for layer {layer}")
            idx = torch.as_tensor(sorted(int(c) for c in channels), dtype=torch.long)
            if int(idx.max()) >= values[layer].numel() or int(idx.min()) < 0:
                raise ImpactError(f"layer {layer} has {values[layer].numel()} channels; the neurons table names "
                                  f"channel {int(idx.max())}")
            self._edits[layer] = (idx, values[layer][idx].clone())
        self.seen: set[str] = set()

    @property
    def layers(self) -> set[str]:
        return set(self._edits)

    def __call__(self, call: ConvCall) -> None:
        edit = self._edits.get(call.layer)
        if edit is None:
            return
        idx, vals = edit
        if idx.device != call.out.device:
            idx, vals = idx.to(call.out.device), vals.to(call.out.device)
            self._edits[call.layer] = (idx, vals)
        # The conv output is a fresh tensor that nothing else holds yet: editing it in place is safe.
        call.out[:, idx] = vals.to(call.out.dtype).view(1, -1, 1, 1)
        self.seen.add(call.layer)

    def check_all_seen(self) -> None:
        missing = sorted(self.layers - self.seen)
        if missing:
            raise ImpactError(f"ablation never reached layers {', '.join(missing[:5])}")


def channel_means(
    model: nn.Module, images: torch.Tensor, layers: set[str], *, batch_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Each channel's mean conv output over ``images`` (the probe): the value an ablated neuron is clamped to."""
    recorder = MeanRecorder(layers)
    forward_batches(model, images, batch_size=batch_size, device=device, on_conv=recorder)
    return recorder.means()


def ablated_logits(
    model: nn.Module,
    images: torch.Tensor,
    units: Units,
    means: Mapping[str, torch.Tensor],
    *,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Logits with every neuron in ``units`` replaced by its mean activation."""
    replacer = ChannelReplacer(units, means)
    logits = forward_batches(model, images, batch_size=batch_size, device=device, on_conv=replacer)
    replacer.check_all_seen()
    return logits
