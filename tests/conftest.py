"""Shared fixtures. Sections are owned by topic; keep additions in their own block."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never wait on the network: the hub is unreachable here and in CI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """The folder of real trained weights beside the checkout; skips the test when absent."""
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"real trained weights not available ({SHARED_MODELS} is absent)")
    return SHARED_MODELS


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"
