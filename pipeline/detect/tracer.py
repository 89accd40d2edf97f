"""See every 2-D convolution a model runs, with the padding it really reads.

A :class:`~torch.overrides.TorchFunctionMode` intercepts ``F.conv2d`` and ``F.pad`` however a
model calls them: ``nn.Conv2d`` (any ``padding_mode``), ``padding='same'``, timm's dynamic SAME
convolutions (``F.pad`` inside ``forward``, ``padding=0`` on the module), weight-standardised
convolutions (the weight actually used, not ``module.weight``) and convolutions fed by an
explicit pad layer or ``F.pad``. Module hooks keep a stack of active module names so each call
is attributed to the module path from ``named_modules``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_CONV_FUNCS = {F.conv2d, torch.conv2d}
_PAD_FUNCS = {F.pad, torch._C._nn.pad}


@dataclass(frozen=True)
class PadRecord:
    """An ``F.pad`` call whose output may feed a convolution."""

    pads: tuple[int, int, int, int]  # top, bottom, left, right
    mode: str  # constant | reflect | replicate | circular
    value: float
    module: str  # innermost active module when the pad ran


@dataclass
class ConvCall:
    """One convolution call, as the detector needs it. ``x`` is what ``F.conv2d`` received."""

    layer: str
    module: nn.Module | None
    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int
    pad: PadRecord | None  # the pad that produced ``x``, if any
    out: torch.Tensor


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _conv_args(args: tuple, kwargs: dict) -> dict[str, Any]:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    for k, v in defaults.items():
        bound.setdefault(k, v)
    return bound


def _pad_record(args: tuple, kwargs: dict, module: str) -> PadRecord | None:
    pad = args[1] if len(args) > 1 else kwargs.get("pad")
    mode = (args[2] if len(args) > 2 else kwargs.get("mode")) or "constant"
    value = args[3] if len(args) > 3 else kwargs.get("value")
    pad = tuple(int(p) for p in pad)
    if len(pad) < 4 or any(p < 0 for p in pad) or any(pad[4:]):
        return None  # not a plain 2-D spatial pad (1-D, cropping, or channel padding)
    left, right, top, bottom = pad[:4]
    return PadRecord((top, bottom, left, right), str(mode), float(value or 0.0), module)


class ConvTracer(TorchFunctionMode):
    """Calls ``on_conv`` for every 2-D convolution run while active (inside ``attach``)."""

    def __init__(self, model: nn.Module, on_conv: Callable[[ConvCall], None]) -> None:
        super().__init__()
        self.model = model
        self.on_conv = on_conv
        self._stack: list[tuple[str, nn.Module]] = []
        self._pads: dict[int, tuple[weakref.ref, PadRecord]] = {}
        self._calls: dict[str, int] = {}
        self._handles: list[Any] = []

    # -- module attribution -------------------------------------------------------------
    def _push(self, name: str) -> Callable:
        def hook(module: nn.Module, _inputs: Any) -> None:
            self._stack.append((name, module))

        return hook

    def _pop(self, module: nn.Module, _inputs: Any, _output: Any) -> None:
        if self._stack and self._stack[-1][1] is module:
            self._stack.pop()

    def __enter__(self) -> ConvTracer:
        for name, module in self.model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._push(name or "<root>")))
            self._handles.append(module.register_forward_hook(self._pop))
        self.new_pass()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._stack.clear()
        self._pads.clear()
        super().__exit__(*exc)

    def new_pass(self) -> None:
        """Call before each forward pass: call counters restart, so names repeat across batches."""
        self._calls.clear()
        self._pads.clear()
        self._stack.clear()

    def _current(self) -> tuple[str, nn.Module | None]:
        return self._stack[-1] if self._stack else ("", None)

    # -- interception -----------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in _PAD_FUNCS:
            out = func(*args, **kwargs)
            record = _pad_record(args, kwargs, self._current()[0])
            if record is not None and isinstance(out, torch.Tensor):
                self._pads[id(out)] = (weakref.ref(out), record)
            return out
        if func in _CONV_FUNCS:
            a = _conv_args(args, kwargs)
            out = func(*args, **kwargs)
            x = a["input"]
            if x.dim() != 4:
                return out
            entry = self._pads.get(id(x))
            pad = entry[1] if entry is not None and entry[0]() is x else None
            name, module = self._current()
            count = self._calls.get(name, 0) + 1
            self._calls[name] = count
            layer = name if count == 1 else f"{name}@{count}"
            padding = a["padding"] if isinstance(a["padding"], str) else _pair(a["padding"])
            self.on_conv(
                ConvCall(
                    layer=layer,
                    module=module,
                    x=x,
                    weight=a["weight"],
                    bias=a["bias"],
                    stride=_pair(a["stride"]),
                    padding=padding,
                    dilation=_pair(a["dilation"]),
                    groups=int(a["groups"]),
                    pad=pad,
                    out=out,
                )
            )
            return out
        return func(*args, **kwargs)
