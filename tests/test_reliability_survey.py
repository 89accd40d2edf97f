"""The survey's side of docs/reliability.md: compaction between runs, --impact on a compacted folder,
a full disk, two writers, timeouts from submission, resolve failures that heal. On a real Ray runtime.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.compact import compact
from pipeline.errors import PanSurveyError
from pipeline.folder_lock import is_locked_by_other
from pipeline.impact.settings import ImpactSettings
from pipeline.settings import DetectSettings
from pipeline.store import ResultStore, file_key, is_compacted
from pipeline.survey import SurveyOptions, run_survey
from tests.test_reliability import REPO, cli, results, verify_ok

SETTINGS = DetectSettings(num_images=2, image_size=32, probe="noise")
QUIET = SurveyOptions(random_init=True, progress="off")
FIRST = ["py:tests/survey_factories.py:tiny_cnn", "py:tests/survey_factories.py:mlp"]
MORE = [*FIRST, "py:tests/toy_models.py:BorderCNN"]
IMPACT = ImpactSettings(max_images=4, controls=1, padding_modes=("reflect",), border_patches=0)


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch) -> None:
    monkeypatch.chdir(REPO)  # py: ids are relative to the working directory


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted survey of MORE (the reference every test compares with)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    os.chdir(REPO)
    root = tmp_path_factory.mktemp("clean") / "results"
    summary = run_survey(MORE, root, SETTINGS, QUIET)
    assert summary.done == len(MORE)
    return root, results(root)


@pytest.mark.ray
def test_survey_compact_survey_with_more_models(ray_local, clean, tmp_path: Path) -> None:
    root = tmp_path / "d"
    assert run_survey(FIRST, root, SETTINGS, QUIET).done == len(FIRST)
    compact(root)
    again = run_survey(MORE, root, SETTINGS, QUIET)
    assert (again.skipped, again.done) == (len(FIRST), 1)
    assert results(root) == clean[1]
    verify_ok(root)


@pytest.mark.ray
def test_survey_compact_then_survey_with_impact_adds_impact_only(ray_local, clean, tmp_path: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(clean[0], root)
    compact(root)
    summary = run_survey(FIRST, root, SETTINGS, QUIET, impact=IMPACT)
    assert summary.done == len(FIRST), [r.message for r in summary.models]
    got = results(root)
    assert {k: got[k] for k in ("models", "neurons", "layers")} == {k: clean[1][k] for k in ("models", "neurons",
                                                                                             "layers")}
    # impact rows for each, no second detection
    assert {r[0] for r in got["impact"]} == {f"{spec}@random-init" for spec in FIRST}
    assert not [p for p in (root / "models").glob("*.parquet") if not is_compacted(p)]
    verify_ok(root)


@pytest.mark.ray
def test_a_full_disk_stops_the_survey_and_a_rerun_completes_it(ray_local, clean, tmp_path: Path, monkeypatch) -> None:
    from pipeline import faults

    root = tmp_path / "d"
    monkeypatch.setenv("PANS_FAULT", "write:neurons")
    monkeypatch.setenv("PANS_FAULT_ACTION", "enospc")
    monkeypatch.setenv("PANS_FAULT_AFTER", "1")  # the second model's first file
    faults.reset()
    with pytest.raises(PanSurveyError) as info:
        run_survey(MORE, root, SETTINGS, QUIET)
    message = str(info.value)
    assert "No space left on device" in message and "\n" not in message
    assert len(ResultStore(root).done_keys()) == 1  # what was written stays
    monkeypatch.delenv("PANS_FAULT")
    again = run_survey(MORE, root, SETTINGS, QUIET)
    assert (again.skipped, again.done) == (1, len(MORE) - 1)
    assert results(root) == clean[1]
    verify_ok(root)


@pytest.mark.ray
def test_resolve_failure_is_cleared_when_the_spec_resolves(ray_local, tmp_path: Path) -> None:
    root = tmp_path / "d"
    late = tmp_path / "late.py"
    spec = f"py:{late}:tiny_cnn"
    first = run_survey([spec], root, SETTINGS, QUIET)
    assert [(r.stage, r.status) for r in first.models] == [("resolve", "failed")]
    assert ResultStore(root).read("failures").num_rows == 1
    shutil.copy(REPO / "tests" / "survey_factories.py", late)
    second = run_survey([spec], root, SETTINGS, QUIET)
    assert second.done == 1
    assert ResultStore(root).read("failures").num_rows == 0
    verify_ok(root)


@pytest.mark.ray
def test_a_started_task_is_timed_from_its_start_mark(ray_local, tmp_path: Path) -> None:
    # The task marks its start in Ray's key-value store (pipeline/survey/starts.py); the driver reads
    # it, so a model stuck in its forward pass ends on the per-model limit, not the start limit.
    options = SurveyOptions(random_init=True, progress="off", timeout_per_model=6, start_timeout=4)
    summary = run_survey(["py:tests/survey_factories.py:hangs"], tmp_path / "d", SETTINGS, options)
    [rec] = summary.models
    assert (rec.status, rec.stage) == ("failed", "timeout") and "no result after 6 s" in rec.message, rec.message


@pytest.mark.ray
def test_a_task_that_never_reports_its_start_is_cancelled(ray_local, tmp_path: Path, monkeypatch) -> None:
    from pipeline.survey.driver import Survey

    monkeypatch.setattr(Survey, "_read_starts", lambda self: None)  # every start is lost
    options = SurveyOptions(random_init=True, progress="off", timeout_per_model=60, start_timeout=3)
    started = time.monotonic()
    summary = run_survey(["py:tests/survey_factories.py:hangs"], tmp_path / "d", SETTINGS, options)
    assert time.monotonic() - started < 60  # not the 60 s limit, not forever
    [rec] = summary.models
    assert (rec.status, rec.stage) == ("failed", "timeout") and "did not report its start" in rec.message
    failures = ResultStore(tmp_path / "d").read("failures").to_pylist()
    assert [f["stage"] for f in failures] == ["timeout"]


def _survey_process(root: Path, *specs: str, slow: float, env: dict[str, str] | None = None) -> subprocess.Popen:
    argv = ["survey", *specs, "--out", str(root), "--random-init", "--num-images", "2", "--image-size", "32",
            "--probe", "noise", "--num-cpus", "2", "--progress", "off"]
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "PANS_TEST_SLOW_SECONDS": str(slow),
            **(env or {})}
    full.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *argv], cwd=REPO, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.ray
@pytest.mark.slow
def test_compact_and_a_second_survey_while_a_survey_writes(clean, tmp_path: Path) -> None:
    root = tmp_path / "d"
    specs = [*MORE, "py:tests/survey_factories.py:slow_cnn"]
    first = _survey_process(root, *specs, slow=20)
    try:
        deadline = time.monotonic() + 120
        while not is_locked_by_other(root) and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert first.poll() is None and is_locked_by_other(root)
        for argv in (["compact", str(root)], ["survey", *MORE, "--out", str(root), "--random-init"]):
            proc = cli(*argv)
            assert proc.returncode == 2, proc.stdout + proc.stderr
            assert f"being written by `pans survey` (pid {first.pid} on" in proc.stderr
        log, _ = first.communicate(timeout=300)
        assert first.returncode == 0, log
    finally:
        if first.poll() is None:
            os.killpg(first.pid, 9)
    verify_ok(root)
    done = results(root)
    assert len(done["models"]) == len(specs)
    assert main_compact(root) == 0
    assert results(root) == done
    clean_rows = {k: [r for r in done[k] if "slow_cnn" not in r[0]] for k in ("models", "neurons", "layers")}
    assert clean_rows == {k: clean[1][k] for k in ("models", "neurons", "layers")}
    verify_ok(root)
    assert ResultStore(root).is_done(file_key("py:tests/survey_factories.py:slow_cnn@random-init", SETTINGS.config_id))


def main_compact(root: Path) -> int:
    from pipeline.cli import main

    return main(["compact", str(root)])


@pytest.mark.ray
@pytest.mark.slow
def test_sigkill_of_the_survey_driver_between_a_models_files(ray_local, clean, tmp_path: Path) -> None:
    """The driver dies after the second model's neurons and layers, before its done-marker is renamed in."""
    root = tmp_path / "d"
    proc = _survey_process(root, *MORE, slow=0, env={"PANS_FAULT": "rename:models", "PANS_FAULT_AFTER": "1"})
    try:
        log, _ = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)  # what the killed driver's Ray runtime left
    assert proc.returncode == -9, log
    assert len(ResultStore(root).done_keys()) == 1
    assert cli("verify", str(root)).returncode == 1  # the half-written model's rows are orphans
    again = run_survey(MORE, root, SETTINGS, QUIET)
    assert (again.skipped, again.done) == (1, len(MORE) - 1)
    assert results(root) == clean[1]
    verify_ok(root)
