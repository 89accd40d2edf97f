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
        "print(gc.get_freeze_count(), took, gc.isenabled())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    frozen, took, collecting = out.stdout.split()
    assert int(frozen) > 100_000  # torch, timm and the detector: out of the collector's sight
    assert float(took) < 0.05  # a full collection no longer walks them (~0.2 s before)
    assert collecting == "True"  # off during the imports only: the worker's models are collected


@pytest.mark.ray
def test_random_init_models_go_straight_to_detection(ray_local, tmp_path: Path) -> None:
    from pipeline.survey import SurveyOptions, run_survey

    summary = run_survey(
        ["test_resnet", py("tiny_cnn")], tmp_path / "out", SMALL, SurveyOptions(random_init=True, progress="off")
    )
    assert (summary.done, summary.failed) == (2, 0)
    assert all(r.fetch_node is None and r.detect_node for r in summary.models), summary.models


@pytest.mark.ray
def test_the_embedded_runtime_starts_without_the_helpers_it_cannot_use() -> None:
    # No autoscaler monitor (the embedded runtime never grows) and no log monitor unless worker
    # output is streamed to the driver: each is a process importing Ray on the survey's cores.
    code = (
        "import ray\n"
        "from ray._private.parameter import RayParams\n"
        "from pipeline.survey.runtime import connect\n"
        "init = RayParams.__init__\n"
        "for to_driver in (False, True):\n"
        "    rt = connect(None, num_cpus=1, log_to_driver=to_driver)\n"
        "    from ray._private.worker import _global_node\n"
        "    kinds = sorted(_global_node.all_processes)\n"
        "    print(to_driver, ','.join(kinds), ray.get(ray.remote(lambda: 6 * 7).remote()))\n"
        "    rt.close()\n"
        "print('restored', RayParams.__init__ is init)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines.keys() == {"False", "True", "restored"}, out.stdout + out.stderr[-2000:]
    quiet, streaming = lines["False"].split(), lines["True"].split()
    assert quiet[1] == streaming[1] == "42"  # the runtime runs tasks
    assert "raylet" in quiet[0].split(",") and "gcs_server" in quiet[0].split(",")
    assert "monitor" not in quiet[0].split(",") and "log_monitor" not in quiet[0].split(",")
    assert "log_monitor" in streaming[0].split(",") and "monitor" not in streaming[0].split(",")
    assert lines["restored"] == "True"  # Ray's own parameters are as they were for any later start
