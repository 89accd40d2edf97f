"""Padding counterfactual: the same weights, run with reflect, replicate or circular padding.

A :class:`~torch.overrides.TorchFunctionMode` active only during the counterfactual's forward
passes rewrites the zero padding that reaches a 2-D convolution, however the model makes it:

- ``F.conv2d`` with ``padding > 0`` or ``padding='same'`` (``nn.Conv2d`` with ``padding_mode='zeros'``):
  the input is padded with the new mode and the convolution runs with ``padding=0``;
- a zero ``F.pad`` whose output feeds a convolution (timm ``Conv2dSame`` and other dynamic SAME
  convolutions, ``nn.ZeroPad2d``, ``nn.ConstantPad2d(…, 0)``, TF-ported stems, negative "shift"
  pads): the convolution receives the pad's input padded with the new mode instead.

Not covered (left as the model has them): pooling layers' own padding (max pooling pads with
-inf, which no mode changes meaningfully; average pooling with ``count_include_pad``), zero pads
that feed anything other than a convolution, and convolutions already using a non-zero
``padding_mode``. Where a mode is impossible (reflect needs the pad to be smaller than the map,
circular no larger than it), that call falls back to replicate and is counted.

Nothing in the model is modified, so no copy is needed and the model is exactly as it was after.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from pipeline.impact.errors import ImpactError
from pipeline.impact.padding_experiment import MODES

_CONV_FUNCS = {F.conv2d, torch.conv2d}
_PAD_FUNCS = {F.pad, torch._C._nn.pad}


@dataclass
class SwapCounts:
    """What a counterfactual pass changed: convolution calls, by where their padding came from."""

    conv_padding: int = 0  # convs whose own padding argument was replaced
    explicit_pad: int = 0  # convs fed by a zero F.pad that was replaced
    fallbacks: int = 0  # calls where the mode was impossible and replicate was used


def _pad_arg(args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple[int, ...], str, float]:
    x = args[0] if args else kwargs["input"]
    pad = args[1] if len(args) > 1 else kwargs["pad"]
    mode = (args[2] if len(args) > 2 else kwargs.get("mode")) or "constant"
    value = args[3] if len(args) > 3 else kwargs.get("value")
    return x, tuple(int(p) for p in pad), str(mode), float(value or 0.0)


def _pad_with(x: torch.Tensor, pads: tuple[int, int, int, int], mode: str, counts: SwapCounts) -> torch.Tensor:
    """Pad (left, right, top, bottom) with ``mode``; negative entries crop, as in ``F.pad``."""
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    x = x[..., max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]
    pads = (max(left, 0), max(right, 0), max(top, 0), max(bottom, 0))
    if not any(pads):
        return x
    h, w = x.shape[-2:]
    limit_h, limit_w = (h - 1, w - 1) if mode == "reflect" else (h, w) if mode == "circular" else (None, None)
    if limit_h is not None and (max(pads[2:]) > limit_h or max(pads[:2]) > limit_w):
        counts.fallbacks += 1
        mode = "replicate"
    return F.pad(x, pads, mode=mode)


def _conv_pads(padding: Any, weight: torch.Tensor, dilation: Any) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding a conv2d call asks for."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        kh, kw = weight.shape[-2:]
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
        th, tw = dh * (kh - 1), dw * (kw - 1)
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)  # PyTorch's 'same' split
    ph, pw = (padding, padding) if isinstance(padding, int) else (tuple(padding) * 2)[:2]
    return (int(pw), int(pw), int(ph), int(ph))


class PaddingSwap(TorchFunctionMode):
    """While active, zero padding that reaches a convolution is replaced by ``mode`` padding."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in MODES:
            raise ImpactError(f"unknown padding mode {mode!r} (use {', '.join(MODES)})")
        self.mode = mode
        self.counts = SwapCounts()
        # id(pad output) -> (weak ref to the output, the pad's input, its pad tuple)
        self._zero_pads: dict[int, tuple[weakref.ref, torch.Tensor, tuple[int, int, int, int]]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in _PAD_FUNCS:
            out = func(*args, **kwargs)
            x, pads, mode, value = _pad_arg(args, kwargs)
            if mode == "constant" and value == 0.0 and x.dim() == 4 and len(pads) == 4 and any(p > 0 for p in pads):
                self._zero_pads[id(out)] = (weakref.ref(out), x, pads)  # type: ignore[assignment]
            return out
        if func in _CONV_FUNCS:
            names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
            bound = dict(zip(names, args, strict=False))
            bound.update(kwargs)
            x = bound["input"]
            if x.dim() != 4:
                return func(*args, **kwargs)
            entry = self._zero_pads.pop(id(x), None)
            if entry is not None and entry[0]() is x:
                bound["input"] = _pad_with(entry[1], entry[2], self.mode, self.counts)
                self.counts.explicit_pad += 1
            pads = _conv_pads(bound.get("padding", 0), bound["weight"], bound.get("dilation", 1))
            if any(pads):
                bound["input"] = _pad_with(bound["input"], pads, self.mode, self.counts)
                bound["padding"] = 0
                self.counts.conv_padding += 1
            return func(**bound)
        return func(*args, **kwargs)

    def new_pass(self) -> None:
        self._zero_pads.clear()
        self.counts = SwapCounts()


@torch.no_grad()
def padding_logits(
    model: nn.Module, images: torch.Tensor, mode: str, *, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, SwapCounts]:
    """Logits of ``model`` on ``images`` with every zero padding before a convolution replaced by ``mode``.

    The counts are those of one forward pass (every pass runs the same convolutions).
    """
    from pipeline.impact.ablation import as_logits

    model.eval().to(device)
    swap = PaddingSwap(mode)
    out = []
    with swap:
        for start in range(0, images.shape[0], batch_size):
            swap.new_pass()
            out.append(as_logits(model(images[start : start + batch_size].to(device))).float().cpu())
    return torch.cat(out), swap.counts
