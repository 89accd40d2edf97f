"""Versions recorded beside every result."""

from __future__ import annotations

import json
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

#: Bump when a change to the detector can change any stored number.
DETECTOR_VERSION = "1.2"
# 1.1: layers with fewer than 4 interior positions are skipped.
# 1.2: a side's strip holds only positions that read that side's padding (no corners);
#      is_pan is counted in constant-padding layers only (neurons.pan_rule).

_LIBRARIES = ("pan-survey", "torch", "torchvision", "timm", "huggingface-hub", "ray", "pyarrow", "duckdb", "numpy")


@cache
def library_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def library_versions_json() -> str:
    return json.dumps(library_versions(), sort_keys=True)


@cache
def git_revision() -> str | None:
    """The project's git commit, when running from a checkout (None from an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
