"""The null twins' rows (``null_neurons``) keep the folder's invariants (docs/reliability.md, issue 9).

``pans verify`` finds a missing, miscounted, orphan or doubled twin and ``--repair`` undoes it the
way it undoes the same problem in ``neurons``; ``pans compact`` merges the twins and every read gives
the same numbers; a survey measures a twin shared by two trained tags once, and a resumed survey on
a compacted folder does not measure it again; ``pans detect`` of a second tag reuses the first one's
twin from the folder (own file or compacted) unless it cannot read it. Real files, real CLI, real Ray.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.store import ResultStore, is_compacted, null_key
from tests.fixtures_hub import export_timm, put_in_cache
from tests.test_reliability import REPO, SPECS, cli, results, verify_ok

#: Trained models (not --random-init), so each gets its null twin.
TRAINED = ["--num-images", "2", "--image-size", "32", "--probe", "noise"]
#: What a duplicated or lost twin changes: its rows, and the two named queries built on them.
NULL_QUERIES = {
    "null_groups": "SELECT * FROM null_groups ORDER BY ALL",
    "pans_vs_null": "SELECT model_id, pans, null_model_id, null_pans, null_pct_padded, ratio_to_null "
    "FROM pans_vs_null ORDER BY ALL",
    "null_gap": "SELECT * FROM null_gap ORDER BY ALL",
}
#: One timm architecture, three trained tags (weights made here, placed in an offline HF cache).
ARCH = "mobilenetv4_conv_small"
TAGS = [f"timm:{ARCH}.{t}" for t in ("e1200_r224_in1k", "e2400_r224_in1k", "e3600_r256_in1k")]


def null_results(root: Path) -> dict[str, list[tuple]]:
    from analysis import open as open_results

    con = open_results(root)
    return {name: con.execute(sql).fetchall() for name, sql in NULL_QUERIES.items()}


def detect_trained(root: Path) -> None:
    cwd = os.getcwd()
    os.chdir(REPO)  # py: ids are relative to the working directory
    try:
        for spec in SPECS:
            assert main(["detect", spec, "--out", str(root), *TRAINED]) == 0
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """SPECS detected with their null twins (one each), and the folder's query results."""
    root = tmp_path_factory.mktemp("twins") / "results"
    detect_trained(root)
    nulls = null_results(root)
    assert len(nulls["null_groups"]) == len(SPECS)
    return root, results(root), nulls


def copy_of(twins: tuple[Path, dict, dict], tmp_path: Path) -> Path:
    return Path(shutil.copytree(twins[0], tmp_path / "d"))


def twin_file(root: Path, model_id: str) -> Path:
    """The ``null_neurons`` file of the twin ``model_id`` names."""
    row = next(r for r in ResultStore(root).read("models").to_pylist() if r["model_id"] == model_id)
    return root / "null_neurons" / f"{null_key(row['null_model_id'], row['config_id'])}.parquet"


def assert_repaired_and_rerun_restores(root: Path, twins: tuple[Path, dict, dict]) -> None:
    fixed = cli("verify", str(root), "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    verify_ok(root)
    detect_trained(root)  # the rerun redoes what the repair took out, and only that
    assert results(root) == twins[1] and null_results(root) == twins[2]
    verify_ok(root)


# -- pans verify ------------------------------------------------------------------------------------


def test_verify_names_a_missing_twin_and_repair_takes_out_the_models_naming_it(twins, tmp_path: Path) -> None:
    root = copy_of(twins, tmp_path)
    model = ResultStore(root).read("models").to_pylist()[0]["model_id"]
    twin_file(root, model).unlink()
    proc = cli("verify", str(root))
    assert proc.returncode == 1, proc.stdout
    assert "count" in proc.stdout and "null_neurons" in proc.stdout and "0 rows of twin" in proc.stdout
    fixed = cli("verify", str(root), "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert model not in ResultStore(root).read("models").column("model_id").to_pylist()
    verify_ok(root)
    detect_trained(root)
    assert results(root) == twins[1] and null_results(root) == twins[2]


def test_verify_names_a_miscounted_twin(twins, tmp_path: Path) -> None:
    root = copy_of(twins, tmp_path)
    path = twin_file(root, ResultStore(root).read("models").to_pylist()[-1]["model_id"])
    t = pq.read_table(path)
    pq.write_table(t.slice(0, t.num_rows - 1), path)  # a twin that lost a neuron
    proc = cli("verify", str(root))
    assert proc.returncode == 1 and f"{t.num_rows - 1} rows of twin" in proc.stdout, proc.stdout
    assert_repaired_and_rerun_restores(root, twins)


def test_verify_names_an_orphan_twin(twins, tmp_path: Path) -> None:
    """A twin no model names (the crash between the twin and its model's marker): reported with its file."""
    root = copy_of(twins, tmp_path)
    t = pq.read_table(next((root / "null_neurons").glob("*.parquet")))
    ghost = "py:tests/ghost.py:net@random-init@32x32"
    cfg = t.column("config_id")[0].as_py()
    t = t.set_column(t.schema.get_field_index("model_id"), "model_id", pa.array([ghost] * t.num_rows))
    orphan = root / "null_neurons" / f"{null_key(ghost, cfg)}.parquet"
    pq.write_table(t, orphan)
    proc = cli("verify", str(root))
    assert proc.returncode == 1 and "orphan" in proc.stdout and orphan.name in proc.stdout, proc.stdout
    fixed = cli("verify", str(root), "--repair")
    assert fixed.returncode == 0 and not orphan.exists()
    assert list((root / "quarantine").rglob(orphan.name))  # moved, not deleted
    assert results(root) == twins[1] and null_results(root) == twins[2]
    verify_ok(root)


def test_verify_finds_and_repairs_a_twin_written_twice(twins, tmp_path: Path) -> None:
    """A twin beside its compacted copy (what a write that ignored compacted twins would leave)."""
    root = copy_of(twins, tmp_path)
    assert main(["compact", str(root)]) == 0
    for f in (twins[0] / "null_neurons").glob("*.parquet"):
        shutil.copy(f, root / "null_neurons" / f.name)
    assert null_results(root) != twins[2]
    proc = cli("verify", str(root))
    assert proc.returncode == 1 and "duplicate" in proc.stdout and "null_neurons" in proc.stdout, proc.stdout
    assert cli("verify", str(root), "--repair").returncode == 0
    assert results(root) == twins[1] and null_results(root) == twins[2]
    verify_ok(root)


# -- pans compact -----------------------------------------------------------------------------------


def test_compaction_merges_the_twins_and_every_read_is_unchanged(twins, tmp_path: Path) -> None:
    root = copy_of(twins, tmp_path)
    before = cli("stats", str(root))
    assert before.returncode == 0, before.stderr
    proc = cli("compact", str(root))
    assert proc.returncode == 0 and "null_neurons" in proc.stdout, proc.stdout + proc.stderr
    files = list((root / "null_neurons").glob("*.parquet"))
    assert files and all(is_compacted(f) for f in files)  # the twins are merged like every model table
    assert results(root) == twins[1] and null_results(root) == twins[2]
    assert cli("stats", str(root)).stdout == before.stdout
    store = ResultStore(root)
    for row in store.read("models").to_pylist():  # resume finds a compacted twin
        assert store.null_counts(row["null_model_id"], row["config_id"]) == (row["null_pans"],
                                                                             row["null_padded_neurons"])
    verify_ok(root)
    assert main(["compact", str(root)]) == 0  # nothing left to merge: still one copy
    assert null_results(root) == twins[2]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["compact:moved:null_neurons", "compact:deleted:null_neurons"])
def test_sigkill_while_compacting_the_twins(point: str, twins, tmp_path: Path) -> None:
    """Killed between the twins' renames and deletes (both copies on disk): the next writer finishes it."""
    root = copy_of(twins, tmp_path)
    killed = cli("compact", str(root), env={"PANS_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert main(["compact", str(root)]) == 0
    assert results(root) == twins[1] and null_results(root) == twins[2]
    assert all(is_compacted(p) for p in (root / "null_neurons").glob("*.parquet"))
    verify_ok(root)


# -- two trained tags of one architecture share a twin ----------------------------------------------


@pytest.fixture
def tags_offline(hf_cache: Path, tmp_path: Path) -> dict[str, str]:
    """TAGS as trained timm weights in an offline HF cache; the environment a subprocess needs."""
    for i, tag in enumerate(TAGS):
        folder = export_timm(tmp_path / f"export-{i}", ARCH, seed=i)
        files = {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"}
        put_in_cache(hf_cache, f"timm/{tag.removeprefix('timm:')}", files)
    return {"HF_HOME": str(hf_cache.parent), "HF_HUB_OFFLINE": "1"}


def twin_rows(root: Path) -> tuple[int, list[dict]]:
    """(rows in null_neurons, models rows by model_id)."""
    models = sorted(ResultStore(root).read("models").to_pylist(), key=lambda r: r["model_id"])
    return ResultStore(root).read("null_neurons").num_rows, models


def no_twin_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, measuring a null twin in this process fails the test."""

    def measure(*_args, **_kwargs):
        raise AssertionError("the null twin was measured again")

    monkeypatch.setattr("pipeline.runner.measure_null_twin", measure)


def test_detect_reuses_the_twin_another_tag_left_in_the_folder(tags_offline, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    """``pans detect`` of a second tag finds the first tag's twin in the folder: not measured, not written again."""
    root = tmp_path / "d"
    assert main(["detect", TAGS[0], "--out", str(root), *TRAINED]) == 0
    (twin,) = (root / "null_neurons").glob("*.parquet")
    written = twin.stat().st_mtime_ns, twin.read_bytes()
    capsys.readouterr()
    no_twin_measured(monkeypatch)
    assert main(["detect", TAGS[1], "--out", str(root), *TRAINED]) == 0
    out = capsys.readouterr().out
    rows, models = twin_rows(root)
    a, b = models  # sorted: TAGS[0], TAGS[1]
    assert b["model_id"] == TAGS[1] and b["null_model_id"] == a["null_model_id"] == f"timm:{ARCH}@random-init@32x32"
    assert (b["null_pans"], b["null_padded_neurons"]) == (a["null_pans"], a["null_padded_neurons"])
    assert a["null_seconds"] is not None and b["null_seconds"] is None  # A measured it, B did not
    assert list((root / "null_neurons").glob("*.parquet")) == [twin]
    assert (twin.stat().st_mtime_ns, twin.read_bytes()) == written  # not rewritten either
    assert rows == a["null_padded_neurons"]
    assert f"null twin (timm:{ARCH}@random-init@32x32, reused from {root})" in out, out
    assert f"PANs {a['null_pans']} (" in out
    verify_ok(root)


def test_detect_measures_again_a_stored_twin_it_cannot_read(tags_offline, tmp_path: Path) -> None:
    """A broken twin file is not reused (nor a traceback): the next tag measures the twin and puts it back whole."""
    root = tmp_path / "d"
    assert main(["detect", TAGS[0], "--out", str(root), *TRAINED]) == 0
    (twin,) = (root / "null_neurons").glob("*.parquet")
    whole = twin.read_bytes()
    twin.write_bytes(b"not parquet" * 10)
    assert main(["detect", TAGS[1], "--out", str(root), *TRAINED]) == 0
    rows, (a, b) = twin_rows(root)
    assert b["null_seconds"] is not None and (b["null_pans"], b["null_padded_neurons"]) == (
        a["null_pans"], a["null_padded_neurons"])
    assert list((root / "null_neurons").glob("*.parquet")) == [twin] and rows == a["null_padded_neurons"]
    assert pq.read_table(twin).equals(pq.read_table(pa.BufferReader(whole)))  # the same twin, measured again
    verify_ok(root)


def test_detect_compact_detect_keeps_one_twin(tags_offline, tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "d"
    assert main(["detect", TAGS[0], "--out", str(root), *TRAINED]) == 0
    assert main(["compact", str(root)]) == 0
    no_twin_measured(monkeypatch)
    assert main(["detect", TAGS[1], "--out", str(root), *TRAINED]) == 0  # reuses the compacted twin
    rows, models = twin_rows(root)
    assert len(models) == 2 and models[0]["null_model_id"] == models[1]["null_model_id"]
    assert models[1]["null_pans"] == models[0]["null_pans"] and models[1]["null_seconds"] is None
    assert rows == models[0]["null_padded_neurons"] == models[1]["null_padded_neurons"]
    assert [p for p in (root / "null_neurons").glob("*.parquet") if not is_compacted(p)] == []
    verify_ok(root)


@pytest.mark.ray
def test_survey_measures_a_shared_twin_once_and_a_resume_after_compact_not_again(tags_offline, tmp_path) -> None:
    root = tmp_path / "survey"
    survey = ["survey", "--out", str(root), "--progress", "off", "--num-cpus", "2", *TRAINED]
    first = cli(*survey, *TAGS[:2], env=tags_offline)
    assert first.returncode == 0, first.stdout + first.stderr
    files = list((root / "null_neurons").glob("*.parquet"))
    rows, models = twin_rows(root)
    assert len(files) == 1 and len(models) == 2
    assert models[0]["null_model_id"] == models[1]["null_model_id"] == f"timm:{ARCH}@random-init@32x32"
    assert models[0]["null_pans"] == models[1]["null_pans"]
    assert rows == models[0]["null_padded_neurons"] == models[1]["null_padded_neurons"]
    assert sum(m["null_seconds"] is not None for m in models) == 1  # measured by one model, handed to the other

    assert cli("compact", str(root)).returncode == 0
    again = cli(*survey, *TAGS, env=tags_offline)  # resume: two done, one new tag of the same architecture
    assert again.returncode == 0, again.stdout + again.stderr
    rows, models = twin_rows(root)
    new = next(m for m in models if m["model_id"] == TAGS[2])
    assert new["null_seconds"] is None  # the stored (compacted) twin was reused, not measured
    assert new["null_model_id"] == models[0]["null_model_id"] and new["null_pans"] == models[0]["null_pans"]
    assert rows == new["null_padded_neurons"]  # still one copy of the twin
    assert all(is_compacted(p) for p in (root / "null_neurons").glob("*.parquet"))
    verify_ok(root)
