"""The PAN detector: pure PyTorch, no Ray, no I/O. See docs/method.md."""

from pipeline.detect.core import DetectionResult, detect_pans, resolve_device
from pipeline.detect.geometry import AxisGeometry, ConvGeometry

__all__ = ["AxisGeometry", "ConvGeometry", "DetectionResult", "detect_pans", "resolve_device"]
