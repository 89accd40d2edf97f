"""A survey's start: models with nothing to download skip the fetch task; workers import once and
freeze the imports out of the garbage collector (pipeline/survey/warmup.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.sources import needs_download, resolve_spec
from tests.test_survey import SMALL, py

ROOT = Path(__file__).resolve().parents[1]


def test_only_sources_that_download_get_a_fetch_task(tmp_path: Path) -> None:
    assert needs_download(resolve_spec("resnet18")[0])  # pretrained timm: the hub
    assert not needs_download(resolve_spec("resnet18", random_init=True)[0])  # nothing to fetch
    assert needs_download(resolve_spec("hf-hub:org/net", random_init=True)[0])  # its config.json
    assert not needs_download(resolve_spec(py("tiny_cnn"))[0])  # a file every node sees
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.json").write_text('{"architecture": "test_resnet"}')
    assert not needs_download(resolve_spec(f"local-dir:{folder}")[0])


def test_a_warmed_worker_has_frozen_its_imports() -> None:
    code = (
        "import gc, time\n"
        "from pipeline.survey.warmup import import_detector\n"
        "import_detector(); import_detector()\n"
        "t = time.perf_counter(); gc.collect(); took = time.perf_counter() - t\n"
        "print(gc.get_freeze_count(), took)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    frozen, took = out.stdout.split()
    assert int(frozen) > 100_000  # torch, timm and the detector: out of the collector's sight
    assert float(took) < 0.05  # a full collection no longer walks them (~0.2 s before)


@pytest.mark.ray
def test_random_init_models_go_straight_to_detection(ray_local, tmp_path: Path) -> None:
    from pipeline.survey import SurveyOptions, run_survey

    summary = run_survey(
        ["test_resnet", py("tiny_cnn")], tmp_path / "out", SMALL, SurveyOptions(random_init=True, progress="off")
    )
    assert (summary.done, summary.failed) == (2, 0)
    assert all(r.fetch_node is None and r.detect_node for r in summary.models), summary.models
