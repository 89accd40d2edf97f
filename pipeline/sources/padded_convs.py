"""Does a model read padding at all? Decided from its modules, so it works on the meta device.

A survey lists every model a spec names; a ViT with a patchify stem (no padding) is a result
("no padded convolutions"), not an error. This module answers that without weights or memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # every function here takes a built model, so torch is imported by then
    import torch.nn as nn


def _torch_pads() -> tuple[type[nn.Module], ...]:
    """Explicit padding modules of torch (ZeroPad2d is a ConstantPad2d)."""
    import torch.nn as nn

    return (nn.ConstantPad2d, nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.CircularPad2d)


def _pairs(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _is_conv(module: nn.Module) -> bool:
    """nn.Conv2d and look-alikes (timm's CondConv2d): a 4-d weight plus kernel/stride/padding."""
    import torch.nn as nn

    if isinstance(module, nn.Conv2d):
        return True
    weight = getattr(module, "weight", None)
    return (
        hasattr(module, "padding")
        and hasattr(module, "kernel_size")
        and isinstance(weight, nn.Parameter | type(None))
        and weight is not None
        and weight.dim() == 4
    )


def _is_dynamic_same(module: nn.Module) -> bool:
    """timm's TF-"SAME" family (Conv2dSame, StdConv2dSame, ...): pads at run time, its padding attr is 0."""
    if getattr(module, "dynamic_padding", False):  # timm CondConv2d with padding="same"
        return True
    return any(cls.__name__.endswith(("Same", "SameExport")) for cls in type(module).__mro__)


def conv_pads(module: nn.Module) -> bool:
    """Whether this convolution reads padding (zeros or any other padding_mode)."""
    kernel = _pairs(module.kernel_size)
    if _is_dynamic_same(module):
        return max(kernel) > 1  # a 1x1 "SAME" conv never needs padding
    padding = module.padding
    if isinstance(padding, str):
        return padding == "same" and max(kernel) > 1
    return any(int(p) != 0 for p in _pairs(padding))


def _is_pad_module(module: nn.Module) -> bool:
    if isinstance(module, _torch_pads()):
        return any(int(p) != 0 for p in module.padding)
    name = type(module).__name__
    return name.startswith("Pad") and "pad" in type(module).__module__.lower()


def padding_summary(model: nn.Module) -> dict[str, Any]:
    """Counts of convolutions, padded convolutions and explicit pad modules in ``model``."""
    convs = padded = pad_modules = 0
    modes: set[str] = set()
    for module in model.modules():
        if _is_conv(module):
            convs += 1
            if conv_pads(module):
                padded += 1
                modes.add(str(getattr(module, "padding_mode", "zeros")))
        elif _is_pad_module(module):
            pad_modules += 1
            modes.add(type(module).__name__)
    return {
        "conv_layers": convs,
        "padded_convs": padded,
        "pad_modules": pad_modules,
        "padding_modes": sorted(modes),
        "has_padded_convs": bool(padded or pad_modules),
    }


def has_padded_convs(model: nn.Module) -> bool:
    """True if any convolution reads padding, or the model pads explicitly with a pad module."""
    return bool(padding_summary(model)["has_padded_convs"])
