"""The driver killed with SIGKILL mid-run: rerunning the same command finishes the rest, exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.store import ResultStore
from tests.test_survey import FACTORIES, consistent_models

SPECS = [
    "test_resnet",
    "test_efficientnet",
    "test_convnext",
    "resnet10t",
    "mobilenetv3_small_050",
    f"py:{FACTORIES}:tiny_cnn",
    f"py:{FACTORIES}:slow_cnn",  # still running at the kill in the first run
    "no_such_model_xyz",
]
GOOD = len(SPECS) - 1


def _survey(out: Path, slow_seconds: float) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "survey",
        *SPECS,
        "--random-init",
        "--out",
        str(out),
        "--num-images",
        "4",
        "--batch-size",
        "4",
        "--image-size",
        "64",
        "--num-cpus",
        "2",
        "--progress",
        "lines",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PANS_TEST_SLOW_SECONDS": str(slow_seconds)}
    env.pop("RAY_ADDRESS", None)
    # Own session: after the test, anything the killed run left behind is ended by its group id.
    return subprocess.Popen(
        cmd,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _end_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.ray
@pytest.mark.slow
def test_driver_sigkill_then_rerun_is_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "results"
    first = _survey(out, slow_seconds=600)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and first.poll() is None:
            done = len(list((out / "models").glob("*.parquet"))) if (out / "models").is_dir() else 0
            if done >= 2:
                break
            time.sleep(0.2)
        assert first.poll() is None, f"the survey ended before it could be killed:\n{first.stdout.read()}"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        _end_group(first)
    done_before = {p.stem for p in (out / "models").glob("*.parquet")}
    assert 2 <= len(done_before) < GOOD

    second = _survey(out, slow_seconds=0)
    try:
        log, _ = second.communicate(timeout=300)
    finally:
        _end_group(second)
    assert second.returncode == 0, log
    assert "already done" in log and f"folder total for this config: {GOOD} models" in log

    models = consistent_models(out)  # no (model, config) twice, every neuron row accounted for
    assert models.num_rows == GOOD
    # The models finished before the kill were not redone: their rows still carry the first run's id.
    store = ResultStore(out)
    assert len(set(models["run_id"].to_pylist())) == 2
    failures = store.read("failures").to_pylist()
    assert [(f["model_id"], f["stage"]) for f in failures] == [("no_such_model_xyz", "resolve")]
    assert store.read("runs").num_rows == 2
