"""Download once: on a cluster whose nodes each have their own hub cache (HF_HOME), every weight
file comes from the hub once per model, on the node that detects it; with one shared cache, once.

The nodes are ``ray.cluster_utils.Cluster`` nodes whose raylets are started with their own
environment (``env_vars``: what ``export HF_HOME=...`` before ``ray start`` is on a real node);
workers inherit the raylet's environment. The stand-in hub's request log counts the downloads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import DetectSettings
from pipeline.survey import SurveyOptions, run_survey
from tests.hub_server import StandInHub

MODELS = [f"org/net{i}" for i in range(4)]
SETTINGS = DetectSettings(num_images=4, batch_size=4, image_size=32)


@pytest.fixture
def hub_with_models(stand_in_hub: StandInHub, tiny_timm_export) -> StandInHub:
    for i, repo in enumerate(MODELS):
        folder = tiny_timm_export("test_resnet", seed=i)
        stand_in_hub.add_repo(
            repo, {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"}
        )
    return stand_in_hub


def _cluster(caches: list[Path]):
    """A CPU head and two nodes with a logical GPU each; node ``i`` has ``HF_HOME=caches[i]``."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False, "env_vars": {"HF_HOME": str(caches[0])}},
    )
    gpu_nodes = [cluster.add_node(num_cpus=1, num_gpus=1, env_vars={"HF_HOME": str(c)}) for c in caches[1:]]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    return cluster, {n.node_id: c for n, c in zip(gpu_nodes, caches[1:], strict=True)}


def _weights_in(cache: Path) -> set[str]:
    """Repos whose weight file is in a hub cache (``models--org--netN/snapshots/*/model.safetensors``)."""
    found = cache.glob("hub/models--*/snapshots/*/model.safetensors")
    return {p.parts[-4].removeprefix("models--").replace("--", "/") for p in found}


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("shared", [False, True], ids=["cache-per-node", "shared-cache"])
def test_each_weight_file_comes_from_the_hub_once(hub_with_models: StandInHub, tmp_path: Path, shared: bool) -> None:
    import ray

    caches = [tmp_path / ("hf-shared" if shared else f"hf-node{i}") for i in range(3)]
    cluster, gpu_caches = _cluster(caches)
    try:
        summary = run_survey(
            [f"hf-hub:{m}" for m in MODELS], tmp_path / "results", SETTINGS, SurveyOptions(progress="off")
        )
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert (summary.done, summary.failed) == (len(MODELS), 0), summary.models
    for repo in MODELS:  # the request log: downloads of the weight file (HEAD is metadata only)
        gets = [
            r.path
            for r in hub_with_models.requests
            if r.method == "GET"
            and r.path.endswith(f"/{repo}/resolve/{hub_with_models.repos[repo].commit}/model.safetensors")
        ]
        assert len(gets) == 1, (repo, [r.path for r in hub_with_models.requests if repo in r.path])
    for rec in summary.models:
        assert rec.detect_node in gpu_caches, rec  # detection on the GPU nodes ...
        assert rec.fetch_node == rec.detect_node, rec  # ... which fetched what they detect
    if not shared:
        assert _weights_in(caches[0]) == set(), "the CPU head, which detects nothing, downloaded weights"
        for rec in summary.models:  # each node's cache holds exactly the models it detected
            repo = rec.model_id.removeprefix("hf-hub:")
            holders = {node for node, cache in gpu_caches.items() if repo in _weights_in(cache)}
            assert holders == {rec.detect_node}, rec


def test_a_download_counts_only_in_this_nodes_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node's cache on a readable path is not this node's copy; a user's file is usable anywhere."""
    from pipeline.sources.node_cache import is_download, usable_on_this_node
    from tests.fixtures_hub import put_in_cache

    commit = put_in_cache(tmp_path / "a" / "hub", "org/net", {"model.safetensors": b"weights"})
    theirs = tmp_path / "a" / "hub" / "models--org--net" / "snapshots" / commit / "model.safetensors"
    user_file = tmp_path / "mine" / "model.safetensors"
    user_file.parent.mkdir()
    user_file.write_bytes(b"weights")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert is_download(theirs) and not is_download(user_file)
    assert is_download(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")

    monkeypatch.setenv("HF_HOME", str(tmp_path / "a"))
    assert usable_on_this_node(theirs)  # the same cache: shared, or the node that fetched
    monkeypatch.setenv("HF_HOME", str(tmp_path / "b"))
    assert not usable_on_this_node(theirs)  # another node's cache: fetch here
    assert usable_on_this_node(user_file)
    assert not usable_on_this_node(tmp_path / "b" / "hub" / "missing.safetensors")
