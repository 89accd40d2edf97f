"""The survey on a simulated multi-node cluster (ray.cluster_utils.Cluster): placement and node loss.

The GPU nodes have one *logical* GPU each and no CUDA: detect tasks must land there (they ask
for a GPU share) and fall back to the CPU device. Where downloads go is tests/test_survey_download_once.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.store import ResultStore
from pipeline.survey import ModelRecord, SurveyOptions, run_survey
from tests.test_survey import SMALL, consistent_models, py

SPECS = ["test_resnet", "test_efficientnet", "resnet10t", "mobilenetv3_small_050", py("tiny_cnn")]

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_detect_and_download_on_gpu_nodes_and_a_lost_node_loses_nothing(ray_gpu_cluster, tmp_path: Path) -> None:
    cluster, _head_id, gpu_nodes = ray_gpu_cluster
    gpu_ids = {n.node_id for n in gpu_nodes}
    out = tmp_path / "results"
    removed: list[str] = []

    def lose_a_node(status: str, record: ModelRecord) -> None:
        # After the first result, take away the GPU node that is busy with another model.
        if not removed:
            victim = next(n for n in gpu_nodes if n.node_id != record.detect_node)
            cluster.remove_node(victim, allow_graceful=False)
            removed.append(victim.node_id)

    summary = run_survey(SPECS, out, SMALL, SurveyOptions(random_init=True, progress="off"), on_event=lose_a_node)

    assert removed
    assert (summary.done, summary.failed) == (len(SPECS), 0)
    for rec in summary.models:
        assert rec.fetch_node is None, rec  # random init: nothing to download, no fetch task
        assert rec.detect_node in gpu_ids, rec  # detection: a GPU node ...
        assert rec.device == "cpu", rec  # ... whose GPU is only logical, so the CPU device
    # The surviving GPU node took over the lost node's work: a model whose task died with the node
    # was run again there. (How many models the lost node finished first depends on timing: results
    # it computed just before the removal still arrive, so the count per node is not asserted.)
    survivor = (gpu_ids - set(removed)).pop()
    assert any(r.detect_node == survivor for r in summary.models)
    for rec in summary.models:
        if rec.attempts > 1:
            assert rec.detect_node == survivor, rec
    models = consistent_models(out)  # exactly once: no model twice, every neuron row accounted for
    assert sorted(models["model_id"].to_pylist()) == sorted(r.model_id for r in summary.models)
    assert ResultStore(out).read("failures").num_rows == 0
