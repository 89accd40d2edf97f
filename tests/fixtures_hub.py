"""Fixtures for the model sources: a Hugging Face cache on disk and a stand-in hub on 127.0.0.1.

The cache is laid out exactly as ``huggingface_hub`` lays it out (``models--ORG--NAME/blobs``,
``snapshots/<commit>/`` symlinks, ``refs/main``), so loading from it goes through the real code.
Registered in tests/conftest.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hub_server import LFS_SUFFIXES, StandInHub, git_blob_sha1

LITE0 = "tf_efficientnet_lite0.in1k"


def put_in_cache(cache: Path, repo_id: str, files: dict[str, Path | bytes], commit: str | None = None) -> str:
    """Place files in an HF hub cache as ``hf_hub_download`` would; returns the commit hash used."""
    data = {name: (v.read_bytes() if isinstance(v, Path) else v) for name, v in files.items()}
    commit = (
        commit
        or hashlib.sha1(repr(sorted((n, hashlib.sha256(b).hexdigest()) for n, b in data.items())).encode()).hexdigest()
    )
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, blob in data.items():
        etag = hashlib.sha256(blob).hexdigest() if name.endswith(LFS_SUFFIXES) else git_blob_sha1(blob)
        (repo_dir / "blobs" / etag).write_bytes(blob)
        link = snapshot / name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(repo_dir / "blobs" / etag, snapshot))
    (repo_dir / "refs" / "main").write_text(commit)
    return commit


def export_timm(folder: Path, arch: str, *, safetensors: bool = True, seed: int = 0) -> Path:
    """A randomly initialised timm model saved with timm's own ``save_for_hf`` (config.json + weights)."""
    import timm
    import torch
    from timm.models._hub import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False)
    save_for_hf(model, str(folder), safe_serialization=bool(safetensors))
    return folder


def _sync_offline() -> None:
    from pipeline.sources.hub_download import _sync_hf_offline

    _sync_hf_offline()


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty HF cache under a temporary ``HF_HOME``, offline; yields the ``hub`` folder."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    _sync_offline()
    yield cache
    monkeypatch.undo()
    _sync_offline()


@pytest.fixture
def lite0_cache(hf_cache: Path, shared_models: Path) -> Path:
    """The real trained tf_efficientnet_lite0 from ../shared/models, in the cache as timm/<name>."""
    folder = shared_models / LITE0
    put_in_cache(
        hf_cache,
        f"timm/{LITE0}",
        {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"},
    )
    return hf_cache


@pytest.fixture
def tiny_timm_export(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_timm_export("test_resnet")`` -> a folder exported by ``save_for_hf``."""

    def make(arch: str = "test_resnet", *, safetensors: bool = True, seed: int = 0) -> Path:
        return export_timm(
            tmp_path / f"export-{arch}-{int(safetensors)}-{seed}", arch, safetensors=safetensors, seed=seed
        )

    return make


@pytest.fixture
def stand_in_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInHub]:
    """A running stand-in hub with ``HF_ENDPOINT`` pointing at it, online, an empty cache, fast retries."""
    hub = StandInHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # ignore a login on this machine
    for name, value in {
        "ATTEMPTS": "4",
        "BASE_DELAY": "0.01",
        "MAX_DELAY": "0.05",
        "TOTAL_SECONDS": "20",
        "TIMEOUT": "5",
    }.items():
        monkeypatch.setenv(f"PANS_FETCH_{name}", value)
    _sync_offline()
    try:
        yield hub
    finally:
        hub.stop()
        monkeypatch.undo()
        _sync_offline()
