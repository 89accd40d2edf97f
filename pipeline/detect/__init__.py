"""The PAN detector: pure PyTorch, no Ray, no I/O. See docs/method.md.

Names load lazily, so ``pipeline.detect.classify`` (numpy only) imports without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AxisGeometry", "ConvGeometry", "DetectionResult", "detect_pans", "resolve_device"]


def __getattr__(name: str) -> Any:
    if name in ("DetectionResult", "detect_pans", "resolve_device"):
        from pipeline.detect import core

        return getattr(core, name)
    if name in ("AxisGeometry", "ConvGeometry"):
        from pipeline.detect import geometry

        return getattr(geometry, name)
    raise AttributeError(name)
