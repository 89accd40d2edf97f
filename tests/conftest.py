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


# --- model sources (issue 3): HF cache and stand-in hub fixtures, defined in tests/fixtures_hub.py ---
from tests.fixtures_hub import hf_cache, lite0_cache, stand_in_hub, tiny_timm_export  # noqa: E402,F401

# --- survey (issue 4): one shared local Ray runtime, and a simulated multi-node cluster ---
_RAY_KIND: dict[str, str | None] = {"kind": None}


@pytest.fixture
def ray_local():
    """A local 2-CPU Ray runtime, started once (~3 s) and shared by every test that asks for it."""
    import ray

    if ray.is_initialized() and _RAY_KIND["kind"] != "local":
        ray.shutdown()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        _RAY_KIND["kind"] = "local"
    return ray


@pytest.fixture
def ray_gpu_cluster():
    """A CPU head (2 CPUs) plus two nodes with one *logical* GPU each (no CUDA behind it).

    Yields ``(cluster, head_node_id, [gpu_node, ...])``; torn down after the test.
    """
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    _RAY_KIND["kind"] = None
    # Notice a lost node in ~1 s rather than the production default (~15 s of missed health checks).
    fast_failure = {
        "health_check_initial_delay_ms": 0,
        "health_check_period_ms": 500,
        "health_check_failure_threshold": 2,
    }
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False, "_system_config": fast_failure},
    )
    gpu_nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    try:
        yield cluster, cluster.head_node.node_id, gpu_nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


# --- gpu tests: skipped where there is no CUDA device (CI, this 2-core machine) ---
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
