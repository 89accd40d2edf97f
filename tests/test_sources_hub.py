"""Downloads through the real ``huggingface_hub`` client against a stand-in hub with injected faults.

Each fault must end in a correct load (same tensors as published, revision and sha256 recorded)
or in a clear one-line failure, never in a corrupt load; retries stay within their bounds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.errors import CorruptWeightsError, FetchError, ModelLoadError, OfflineCacheMissError, TransientFetchError
from pipeline.sources import describe, fetch, load_model, resolve_spec
from pipeline.sources.hub_download import fetch_file, hub_cache_dir, set_offline
from tests.hub_server import StandInHub

REPO = "timm/test_resnet.r160_in1k"  # the hub id timm's own pretrained config names for this model


@pytest.fixture
def published(stand_in_hub: StandInHub, tiny_timm_export) -> dict:
    """timm's test_resnet exported with save_for_hf and published on the stand-in hub."""
    folder = tiny_timm_export("test_resnet")
    commit = stand_in_hub.add_repo(
        REPO, {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"}
    )
    weights = (folder / "model.safetensors").read_bytes()
    return {
        "commit": commit,
        "sha256": hashlib.sha256(weights).hexdigest(),
        "state": load_file(folder / "model.safetensors"),
        "size": len(weights),
    }


def _assert_loaded_exactly(loaded, published: dict) -> None:
    assert loaded.revision == published["commit"]
    assert loaded.weights_sha256 == published["sha256"]
    state = loaded.model.state_dict()
    for key, tensor in published["state"].items():
        assert torch.equal(state[key], tensor), key


def test_timm_name_downloads_pinned_and_hashed(stand_in_hub: StandInHub, published: dict) -> None:
    loaded = load_model("test_resnet.r160_in1k")
    _assert_loaded_exactly(loaded, published)
    assert loaded.record()["pretrained_tag"] == "r160_in1k"
    assert loaded.preprocess.input_size == (3, 160, 160)
    # The blob in the cache is named by the sha256 the hub published.
    blobs = list((hub_cache_dir() / "models--timm--test_resnet.r160_in1k" / "blobs").iterdir())
    assert published["sha256"] in {b.name for b in blobs}


def test_fetch_then_offline_load_uses_the_cache_only(stand_in_hub: StandInHub, published: dict) -> None:
    ref = resolve_spec("test_resnet.r160_in1k")[0]
    fetched = fetch(ref)
    assert fetched["revision"] == published["commit"] and fetched["sha256"] == published["sha256"]
    stand_in_hub.stop()  # the hub is gone: loading must not need it
    set_offline(True)
    _assert_loaded_exactly(load_model(ref), published)
    _assert_loaded_exactly(load_model(ref, fetched=fetched), published)


def test_hf_hub_spec_with_revision(stand_in_hub: StandInHub, published: dict) -> None:
    loaded = load_model(f"hf-hub:{REPO}@{published['commit']}")
    _assert_loaded_exactly(loaded, published)
    assert loaded.model_id == f"hf-hub:{REPO}@{published['commit']}"
    with pytest.raises(FetchError, match="no such revision"):
        load_model(f"hf-hub:{REPO}@{'0' * 40}")


def test_rate_limit_is_retried_honouring_retry_after(stand_in_hub: StandInHub, published: dict) -> None:
    stand_in_hub.fault(
        "status", method="HEAD", path_contains="model.safetensors", status=429, times=2, headers={"Retry-After": "0"}
    )
    stand_in_hub.fault(
        "status",
        method="HEAD",
        path_contains="config.json",
        status=429,
        times=1,
        headers={"RateLimit": '"api";r=0;t=0', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'},
    )
    _assert_loaded_exactly(load_model("test_resnet.r160_in1k"), published)


def test_retry_after_beyond_the_budget_fails_at_once(stand_in_hub: StandInHub, published: dict) -> None:
    stand_in_hub.fault("status", method="HEAD", status=429, times=10, headers={"Retry-After": "3600"})
    start = time.monotonic()
    with pytest.raises(TransientFetchError, match=r"3600|budget"):
        fetch_file(REPO, "model.safetensors")
    assert time.monotonic() - start < 5
    assert stand_in_hub.count("HEAD") == 1


def test_server_errors_are_retried_a_bounded_number_of_times(stand_in_hub: StandInHub, published: dict) -> None:
    stand_in_hub.fault("status", path_contains="model.safetensors", status=503, times=100)
    with pytest.raises(TransientFetchError, match=r"gave up after 4 attempts.*HTTP 503"):
        fetch_file(REPO, "model.safetensors")
    assert stand_in_hub.count("HEAD", "model.safetensors") == 4  # PANS_FETCH_ATTEMPTS in the fixture
    assert stand_in_hub.count("GET", "model.safetensors") == 0


def test_a_503_on_the_download_itself_is_retried(stand_in_hub: StandInHub, published: dict) -> None:
    stand_in_hub.fault("status", method="GET", path_contains="model.safetensors", status=503, times=2)
    _assert_loaded_exactly(load_model("test_resnet.r160_in1k"), published)
    assert stand_in_hub.count("GET", "model.safetensors") == 3


def test_dropped_connection_resumes_and_loads_correctly(stand_in_hub: StandInHub, published: dict) -> None:
    stand_in_hub.fault("drop", method="GET", path_contains="model.safetensors", after=published["size"] // 3)
    _assert_loaded_exactly(load_model("test_resnet.r160_in1k"), published)
    # huggingface_hub retries the body itself (resuming with Range when it had flushed bytes).
    assert stand_in_hub.count("GET", "model.safetensors") == 2


def test_truncated_body_is_fetched_again(stand_in_hub: StandInHub, published: dict) -> None:
    stand_in_hub.fault("truncate", method="GET", path_contains="model.safetensors", after=1000)
    _assert_loaded_exactly(load_model("test_resnet.r160_in1k"), published)
    assert stand_in_hub.count("GET", "model.safetensors") == 2


def test_wrong_bytes_are_detected_deleted_and_fetched_again(stand_in_hub: StandInHub, published: dict) -> None:
    stand_in_hub.fault("corrupt", method="GET", path_contains="model.safetensors")
    _assert_loaded_exactly(load_model("test_resnet.r160_in1k"), published)
    assert stand_in_hub.count("GET", "model.safetensors") == 2


def test_persistently_wrong_bytes_fail_and_leave_nothing_loadable(stand_in_hub: StandInHub, published: dict) -> None:
    stand_in_hub.fault("corrupt", method="GET", path_contains="model.safetensors", times=100)
    with pytest.raises(CorruptWeightsError, match="sha256"):
        load_model("test_resnet.r160_in1k")
    blobs = hub_cache_dir() / "models--timm--test_resnet.r160_in1k" / "blobs"
    assert not any(b.stat().st_size > 100_000 for b in blobs.iterdir())  # no corrupt weights left behind


def test_corrupted_cache_file_is_replaced(stand_in_hub: StandInHub, published: dict) -> None:
    fetched = fetch(resolve_spec("test_resnet.r160_in1k")[0])
    blob = Path(fetched["path"]).resolve()
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")  # bit rot on disk
    _assert_loaded_exactly(load_model("test_resnet.r160_in1k"), published)


def test_slow_link_still_loads(stand_in_hub: StandInHub, published: dict) -> None:
    stand_in_hub.fault("slow", method="GET", path_contains="model.safetensors", delay=0.02)
    _assert_loaded_exactly(load_model("test_resnet.r160_in1k"), published)


def test_permanent_failures_are_one_line_and_not_retried(stand_in_hub: StandInHub, published: dict) -> None:
    with pytest.raises(FetchError, match="no such repository") as info:
        load_model("hf-hub:nobody/nothing")
    assert "\n" not in str(info.value)
    assert stand_in_hub.count("HEAD", "nobody/nothing") == 1


def test_gated_repository_fails_without_leaking_the_token(
    stand_in_hub: StandInHub, published: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stand_in_hub.add_repo("org/gated", {"config.json": b"{}"}, gated=True)
    with pytest.raises(FetchError, match="gated"):
        describe("hf-hub:org/gated")
    secret = "hf_" + "s3cr3t" * 5
    monkeypatch.setenv("HF_TOKEN", secret)
    caplog.set_level(logging.DEBUG)
    loaded = load_model(f"hf-hub:{REPO}")
    assert stand_in_hub.requests[-1].authorized  # the token is sent to the hub...
    assert secret not in repr(loaded.record()) and secret not in caplog.text  # ...and nowhere else


def test_pickle_weights_load_only_as_tensors(stand_in_hub: StandInHub, tiny_timm_export, tmp_path: Path) -> None:
    folder = tiny_timm_export("test_resnet", safetensors=False)
    commit = stand_in_hub.add_repo(
        "org/bin-only", {"config.json": folder / "config.json", "pytorch_model.bin": folder / "pytorch_model.bin"}
    )
    loaded = load_model("hf-hub:org/bin-only")
    assert loaded.revision == commit
    assert loaded.weights_sha256 == hashlib.sha256((folder / "pytorch_model.bin").read_bytes()).hexdigest()

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.bin"
    torch.save({"x": Exploit()}, evil)
    stand_in_hub.add_repo("org/evil", {"config.json": folder / "config.json", "pytorch_model.bin": evil})
    with pytest.raises(ModelLoadError, match="weights_only"):  # torch refuses the pickle; nothing runs
        load_model("hf-hub:org/evil")
    assert not marker.exists()


def test_offline_miss_is_immediate_and_clear(stand_in_hub: StandInHub, published: dict) -> None:
    set_offline(True)
    start = time.monotonic()
    with pytest.raises(OfflineCacheMissError, match="offline"):
        load_model("hf-hub:nobody/nothing")
    assert time.monotonic() - start < 1
    assert not stand_in_hub.requests
