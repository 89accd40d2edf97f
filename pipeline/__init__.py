"""pan-survey: find Padding Aware Neurons (PANs) across whole zoos of pretrained CNNs.

Import the detector as ``from pipeline import detect_pans``; heavy parts load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["detect_pans", "load_model", "make_probe", "run_model"]


def __getattr__(name: str) -> Any:  # lazy: `pans --help` must not import torch
    if name == "detect_pans":
        from pipeline.detect import detect_pans

        return detect_pans
    if name == "load_model":
        from pipeline.sources import load_model

        return load_model
    if name == "make_probe":
        from pipeline.probes import make_probe

        return make_probe
    if name == "run_model":
        from pipeline.runner import run_model

        return run_model
    raise AttributeError(name)
