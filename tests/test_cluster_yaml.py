"""cluster.yaml passes Ray's own cluster-config validation (offline); broken copies do not."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def ray_validate(config: dict) -> dict:
    """What `ray up` does before touching a cloud: merge the provider's defaults, check the schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_is_a_valid_ray_cluster_config(config: dict) -> None:
    prepared = ray_validate(config)
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    workers = [t for name, t in types.items() if name != prepared["head_node_type"]]
    # A CPU head and autoscaling GPU workers.
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))
    assert workers and all(w["node_config"]["InstanceType"].startswith(("g5", "g6", "p")) for w in workers)
    assert all(w["min_workers"] == 0 < w["max_workers"] for w in workers)
    # A shared hub cache, and this project installed on every node.
    setup = "\n".join(prepared["setup_commands"])
    assert "HF_HOME=/mnt/efs" in setup and "mount -t nfs4" in setup
    assert "pip install" in setup and "/home/ubuntu/pan-survey" in prepared["file_mounts"]


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.update(max_workers="many"),  # wrong type
        lambda c: c.update(setup_command=c.pop("setup_commands")),  # misspelt key
        lambda c: c["available_node_types"]["worker.gpu"].pop("node_config"),  # missing required field
        lambda c: c["provider"].pop("type"),  # no provider
    ],
    ids=["wrong-type", "misspelt-key", "missing-node-config", "no-provider"],
)
def test_a_broken_copy_does_not_validate(config: dict, break_it) -> None:
    broken = copy.deepcopy(config)
    break_it(broken)
    import jsonschema

    with pytest.raises((jsonschema.ValidationError, KeyError)):  # what Ray raises for each
        ray_validate(broken)
