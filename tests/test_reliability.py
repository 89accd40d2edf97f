"""The results folder holds every model exactly once, whatever happens to it (docs/reliability.md).

Faults are real: a writer killed with SIGKILL at each injection point (pipeline/faults.py), a full
disk raised from inside the write, broken files dropped into every table folder, a second writer
on the folder. Each test ends with ``pans verify`` passing and the query results equal to an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.schema import TABLES
from pipeline.store import ResultStore, is_compacted

REPO = Path(__file__).resolve().parents[1]
SPECS = ["py:tests/survey_factories.py:tiny_cnn", "py:tests/toy_models.py:BorderCNN"]
SMALL = ["--num-images", "2", "--image-size", "32", "--probe", "noise", "--random-init"]

#: What "the same results" means: every stored number, none of the per-run bookkeeping (ids, clocks).
QUERIES = {
    "models": "SELECT model_id, config_id, conv_layers, conv_neurons, padded_neurons, pans, dead_neurons, "
    "probe, tau FROM models ORDER BY ALL",
    "neurons": "SELECT model_id, config_id, layer, channel, is_pan, round(max_abs_own_z, 4) FROM neurons ORDER BY ALL",
    "layers": "SELECT model_id, config_id, layer, layer_index, pans, padding_kind FROM layers ORDER BY ALL",
    "impact": "SELECT model_id, config_id, impact_id, condition, metric, seed, round(value, 6) FROM impact "
    "ORDER BY ALL",
    "counts": "SELECT (SELECT count(*) FROM models), (SELECT count(*) FROM neurons), (SELECT count(*) FROM layers), "
    "(SELECT count(*) FROM impact)",
}


def results(root: Path) -> dict[str, list[tuple]]:
    from analysis import open as open_results

    con = open_results(root)
    return {name: con.execute(sql).fetchall() for name, sql in QUERIES.items()}


def cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``pans ...`` in its own process (what a user runs; the process a fault can kill)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv], cwd=REPO, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )


def verify_ok(root: Path) -> None:
    proc = cli("verify", str(root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK:" in proc.stdout


def detect_all(root: Path, *extra: str) -> None:
    """Detect SPECS in-process (the uninterrupted run, and the reruns after a fault)."""
    cwd = os.getcwd()
    os.chdir(REPO)  # py: ids are relative to the working directory
    try:
        for spec in SPECS:
            assert main(["detect", spec, "--out", str(root), *SMALL, *extra]) == 0
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An uninterrupted run of SPECS and its query results."""
    root = tmp_path_factory.mktemp("clean") / "results"
    detect_all(root)
    return root, results(root)


@contextlib.contextmanager
def holding_lock(root: Path, command: str) -> Iterator[int]:
    """Another process holds ``root``'s writer lock for the body; yields its pid."""
    code = (
        "import sys, time\n"
        "from pipeline.folder_lock import writer_lock\n"
        f"with writer_lock({str(root)!r}, {command!r}):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=30)


# -- one owner of done / write / read back --------------------------------------------------------


def test_detect_compact_detect_keeps_one_copy(clean: tuple[Path, dict], tmp_path: Path, capsys) -> None:
    root, expected = tmp_path / "d", clean[1]
    detect_all(root)
    assert main(["compact", str(root)]) == 0
    capsys.readouterr()
    detect_all(root)  # the reproduction: this used to write every model a second time
    assert capsys.readouterr().out.count("already done") == len(SPECS)
    assert results(root) == expected
    verify_ok(root)


def test_impact_on_a_compacted_folder_reuses_the_detection(clean: tuple[Path, dict], tmp_path: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(clean[0], root)
    assert main(["compact", str(root)]) == 0
    os.chdir(REPO)
    argv = ["impact", SPECS[0], "--out", str(root), *SMALL, "--max-images", "4", "--controls", "1",
            "--padding-modes", "reflect", "--border-patches", "0"]
    assert main(argv) == 0
    got = results(root)
    assert {k: v for k, v in got.items() if k not in ("impact", "counts")} == {
        k: v for k, v in clean[1].items() if k not in ("impact", "counts")}
    assert got["impact"] and got["counts"][0][:3] == clean[1]["counts"][0][:3]  # no second detection
    assert not [p for p in (root / "models").glob("*.parquet") if not is_compacted(p)]
    before = got
    assert main(argv) == 0  # rerun: the impact rows are replaced, not added
    assert results(root) == before
    verify_ok(root)


# -- SIGKILL at each step ------------------------------------------------------------------------

WRITE_POINTS = ["write:neurons", "rename:neurons", "write:layers", "rename:layers", "write:models",
                "rename:models", "write:done"]


@pytest.mark.slow
@pytest.mark.parametrize("point", WRITE_POINTS)
def test_sigkill_at_each_step_of_writing_a_model(point: str, clean: tuple[Path, dict], tmp_path: Path) -> None:
    root = tmp_path / "d"
    killed = cli("detect", SPECS[0], "--out", str(root), *SMALL, env={"PANS_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = ResultStore(root)
    done = store.done_keys()
    assert bool(done) == (point == "write:done")  # the done-marker is the last file, and it is whole
    if point in ("rename:layers", "write:models", "rename:models"):  # neurons (+layers) without a marker
        proc = cli("verify", str(root))
        assert proc.returncode == 1 and "orphan" in proc.stdout, proc.stdout
    detect_all(root)  # the rerun finishes it
    assert results(root) == clean[1]
    verify_ok(root)


COMPACT_POINTS = ["compact:staged", "compact:journal", "compact:moved:neurons", "compact:deleted:neurons",
                  "compact:moved:layers", "compact:moved:models", "compact:deleted:models"]


@pytest.mark.slow
@pytest.mark.parametrize("point", COMPACT_POINTS)
def test_sigkill_at_each_step_of_compact(point: str, clean: tuple[Path, dict], tmp_path: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(clean[0], root)
    killed = cli("compact", str(root), env={"PANS_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Whatever step it died at, the folder reads the same (the journal is rolled forward by the next writer).
    assert main(["compact", str(root)]) == 0
    assert results(root) == clean[1]
    assert all(is_compacted(p) for p in (root / "models").glob("*.parquet"))
    verify_ok(root)


# -- full disk ------------------------------------------------------------------------------------


def test_full_disk_is_one_line_and_loses_nothing(clean: tuple[Path, dict], tmp_path: Path, monkeypatch,
                                                 capsys) -> None:
    from pipeline import faults

    root = tmp_path / "d"
    os.chdir(REPO)
    assert main(["detect", SPECS[0], "--out", str(root), *SMALL]) == 0
    monkeypatch.setenv("PANS_FAULT", "write:layers")
    monkeypatch.setenv("PANS_FAULT_ACTION", "enospc")
    faults.reset()
    capsys.readouterr()
    assert main(["detect", SPECS[1], "--out", str(root), *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and str(root) in err
    assert len(ResultStore(root).done_keys()) == 1  # the first model is intact
    monkeypatch.delenv("PANS_FAULT")
    detect_all(root)  # space freed: the rerun completes it
    assert results(root) == clean[1]
    verify_ok(root)


# -- broken and foreign files ---------------------------------------------------------------------


def test_broken_files_in_every_table_are_named_then_quarantined(clean: tuple[Path, dict], tmp_path: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(clean[0], root)
    sample = next((root / "neurons").glob("*.parquet")).read_bytes()
    for table in TABLES:
        (root / table).mkdir(exist_ok=True)
        (root / table / "zz-truncated.parquet").write_bytes(sample[: len(sample) // 2])
        (root / table / "zz-notes.parquet").write_text("model_id,config_id\nnot,parquet\n")
    pq.write_table(pa.table({"x": [1, 2]}), root / "layers" / "zz-foreign.parquet")

    proc = cli("verify", str(root))
    assert proc.returncode == 1
    for table in TABLES:
        assert f"{table}/zz-truncated.parquet" in proc.stdout or "more" in proc.stdout
    for command in (["query", str(root), "select count(*) from models"], ["stats", str(root)],
                    ["report", str(root), "--out", str(tmp_path / "r.html")]):
        bad = cli(*command)
        assert bad.returncode == 2, bad.stderr
        line = bad.stderr.strip()
        assert len(line.splitlines()) == 1 and "zz-" in line and "verify" in line and "Traceback" not in line

    fixed = cli("verify", str(root), "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    moved = sorted(p.name for p in (root / "quarantine").rglob("*.parquet"))
    assert len(moved) == 2 * len(TABLES) + 1  # every dropped file, none of ours
    assert results(root) == clean[1]
    verify_ok(root)


def test_verify_finds_and_repairs_a_second_copy(clean: tuple[Path, dict], tmp_path: Path) -> None:
    """The old bug's folder (per-model files beside compacted rows): verify names it, --repair undoes it."""
    root = tmp_path / "d"
    shutil.copytree(clean[0], root)
    saved = tmp_path / "saved"
    shutil.copytree(root, saved)
    assert main(["compact", str(root)]) == 0
    for table in ("neurons", "layers", "models"):  # what `pans detect` used to write after a compact
        for f in (saved / table).glob("*.parquet"):
            shutil.copy(f, root / table / f.name)
    assert results(root)["counts"] != clean[1]["counts"]
    proc = cli("verify", str(root))
    assert proc.returncode == 1 and "duplicate" in proc.stdout
    assert cli("verify", str(root), "--repair").returncode == 0
    assert results(root) == clean[1]
    verify_ok(root)


def test_read_commands_refuse_a_folder_that_is_not_results(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    for folder in ("empty", "other"):
        for command in (["query", "select 1"], ["stats"], ["report", "--out", str(tmp_path / "r.html")],
                        ["verify"], ["verify", "--repair"]):
            assert main([command[0], str(tmp_path / folder), *command[1:]]) == 2, command
            out, err = capsys.readouterr()
            assert err.strip().endswith("is not a results folder (no models/ or runs/ in it)") and not out
            assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]  # nothing created there


def test_stats_of_a_results_folder_with_nothing_yet_is_one_line(tmp_path: Path, capsys) -> None:
    ResultStore(tmp_path / "r").ensure()
    assert main(["stats", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'r'}: no results yet (no finished or failed models)\n"


# -- one writer per folder ------------------------------------------------------------------------


def test_a_second_writer_stops_at_once_naming_the_holder(clean: tuple[Path, dict], tmp_path: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(clean[0], root)
    with holding_lock(root, "survey") as pid:
        for argv in (["compact", str(root)], ["detect", "py:tests/survey_factories.py:mlp", "--out", str(root),
                                               *SMALL], ["verify", str(root), "--repair"]):
            started = time.monotonic()
            proc = cli(*argv)
            assert proc.returncode == 2, proc.stderr
            assert f"being written by `pans survey` (pid {pid} on" in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1
            assert time.monotonic() - started < 60  # at once: not after detecting
    assert results(root) == clean[1]
    verify_ok(root)


def test_a_stale_lock_of_a_killed_writer_is_taken_over(clean: tuple[Path, dict], tmp_path: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(clean[0], root)
    code = (
        "import os, signal\n"
        "from pipeline.folder_lock import writer_lock\n"
        f"with writer_lock({str(root)!r}, 'survey'):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    dead = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert dead.returncode == -signal.SIGKILL
    assert '"command": "survey"' in (root / ".pans.lock").read_text()  # its holder record is still there
    proc = cli("compact", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "took over the lock" in proc.stderr and "no longer running" in proc.stderr
    assert results(root) == clean[1]
    verify_ok(root)


# -- ids -----------------------------------------------------------------------------------------


def test_py_and_local_dir_ids_are_portable(tmp_path: Path, monkeypatch) -> None:
    from pipeline.sources import resolve_spec

    monkeypatch.chdir(REPO)
    rel = resolve_spec("py:tests/survey_factories.py:tiny_cnn")[0]
    absolute = resolve_spec(f"py:{REPO / 'tests' / 'survey_factories.py'}:tiny_cnn")[0]
    assert rel.model_id == absolute.model_id == "py:tests/survey_factories.py:tiny_cnn"
    # Another checkout of the same files: the same id.
    other = tmp_path / "checkout"
    (other / "tests").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "survey_factories.py", other / "tests")
    monkeypatch.chdir(other)
    assert resolve_spec("py:tests/survey_factories.py:tiny_cnn")[0].model_id == rel.model_id
    export = other / "exports" / "net"
    export.mkdir(parents=True)
    (export / "config.json").write_text('{"architecture": "resnet10t", "num_classes": 10}')
    assert resolve_spec("local-dir:exports/net")[0].model_id == "local-dir:exports/net"


def test_a_broken_compacted_file_is_quarantined_and_a_rerun_restores_the_numbers(clean: tuple[Path, dict],
                                                                                  tmp_path: Path) -> None:
    root = tmp_path / "d"
    shutil.copytree(clean[0], root)
    assert main(["compact", str(root)]) == 0
    [marker] = (root / "models").glob("compacted-*.parquet")
    marker.write_bytes(marker.read_bytes()[:100])  # a power cut on a disk that lied about fsync
    bad = cli("query", str(root), "select count(*) from neurons")
    assert bad.returncode == 2 and marker.name in bad.stderr
    fixed = cli("verify", str(root), "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert results(root)["counts"] == [(0, 0, 0, 0)]  # its models' other rows went with it (orphans)
    assert len(list((root / "quarantine").rglob("*.parquet"))) == 3
    detect_all(root)  # the same command again redoes what was taken out
    assert results(root) == clean[1]
    verify_ok(root)


def test_impact_rows_only_for_done_models(clean: tuple[Path, dict], tmp_path: Path, capsys) -> None:
    from pipeline.schema import table_from_rows

    root = tmp_path / "d"
    shutil.copytree(clean[0], root)
    store = ResultStore(root)
    row = {"model_id": "timm:never_detected", "config_id": "c0", "impact_id": "i0", "condition": "intact",
           "metric": "images", "value": 4.0}
    store.write("impact", "never-i0", table_from_rows("impact", [row]))  # no models row for it
    done_id = clean[1]["models"][0][:2]
    border = {"model_id": done_id[0], "config_id": done_id[1], "impact_id": "i1", "condition": "intact"}
    store.write("impact_border", "half-i1", table_from_rows("impact_border", [border]))  # no impact marker
    capsys.readouterr()
    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert "impact rows of a model that is not done" in out and "without their impact marker" in out
    assert main(["verify", str(root), "--repair"]) == 0
    assert sorted(p.name for p in (root / "quarantine").rglob("*.parquet")) == ["half-i1.parquet", "never-i0.parquet"]
    assert results(root) == clean[1]
    assert main(["verify", str(root)]) == 0


def test_a_folder_with_old_absolute_ids_still_reads_and_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    from pipeline.sources import pyfile
    from pipeline.survey import SurveyOptions, run_survey

    monkeypatch.chdir(REPO)
    root = tmp_path / "old"
    with monkeypatch.context() as old:  # what earlier versions wrote: the absolute path in the id
        old.setattr(pyfile, "portable_path", lambda p: str(p.resolve()))
        assert main(["detect", SPECS[0], "--out", str(root), *SMALL]) == 0
    [old_id] = [r[0] for r in results(root)["models"]]
    assert old_id == f"py:{REPO / 'tests' / 'survey_factories.py'}:tiny_cnn@random-init"
    capsys.readouterr()
    assert main(["detect", SPECS[0], "--out", str(root), *SMALL]) == 0
    assert "already done" in capsys.readouterr().out
    from pipeline.settings import DetectSettings

    settings = DetectSettings(num_images=2, image_size=32, probe="noise")
    summary = run_survey([SPECS[0]], root, settings, SurveyOptions(random_init=True, progress="off"))
    assert (summary.skipped, summary.done) == (1, 0)  # resumed over the old id; no Ray started
    assert [r[0] for r in results(root)["models"]] == [old_id]
    assert main(["verify", str(root)]) == 0
