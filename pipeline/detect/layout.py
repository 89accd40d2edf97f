"""The memory layout a model is measured in: channels-last for a BatchNorm net on CPU.

On CPU a plain eval-mode forward of a BatchNorm CNN is 0.69-0.89x its NCHW time with its 4-d
weights channels-last (batch 16, 224 px, 2 threads: mobilenetv3_large_100 0.69, efficientnet_lite0
0.76, regnetx_004 0.79, resnet18 0.81, densenet121 0.82, resnet50 0.83, cspdarknet53 0.89,
repvgg_a0 0.98), and train-mode BatchNorm (a null twin's one-pass fit) costs almost nothing more
there. Nets without BatchNorm gain nothing (convnext_tiny 1.00, vit_small 1.01, convnextv2_atto
0.97) and are left alone: code in some of them views its weights as contiguous. The z-scores
agree with NCHW ones to about 2e-5 (float summation order). docs/method.md has the measurements.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn as nn


def on_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model.to(device)``, skipped where every parameter and buffer is there already.

    Skipped, it runs no tensor op: a null twin whose weights are still being drawn beside its pass
    (pipeline/null_twin.py, :class:`~pipeline.null_twin.DrawnBeside`) must not be read before.
    """
    dev = torch.device(device)
    if any(t.device != dev for t in itertools.chain(model.parameters(), model.buffers())):
        model.to(dev)
    return model


def prefers_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Whether ``model`` runs faster channels-last on ``device``: a BatchNorm net on CPU."""
    return device.type == "cpu" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def to_fastest_layout(model: nn.Module, device: torch.device) -> nn.Module:
    """Make ``model``'s 4-d weights channels-last where that is faster (:func:`prefers_channels_last`).

    Parameter by parameter, not ``Module.to(memory_format=...)``, which raises on a 5-d parameter
    (timm's lambda layers). The convolutions then output channels-last maps whatever the input's layout.
    """
    if prefers_channels_last(model, device):
        for p in model.parameters():
            if copied_channels_last(p):
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model


def copied_channels_last(p: torch.Tensor) -> bool:
    """Whether :func:`to_fastest_layout` copies this parameter: 4-d and not channels-last already.

    A weight with a size-1 channel or kernel (depthwise, 1x1) counts as channels-last as it is and
    keeps its strides, which decide the path (and the float sums) of its convolution.
    """
    return p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last)
