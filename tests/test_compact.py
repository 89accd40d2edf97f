"""`pans compact`: same query results, bounded row groups, resume still works, crash-safe."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipeline import compact as compact_mod
from pipeline.compact import compact, recover
from pipeline.errors import PanSurveyError
from pipeline.runner import run_model
from pipeline.settings import DetectSettings
from pipeline.sources import resolve_spec
from pipeline.store import ResultStore, file_key, is_compacted
from pipeline.survey import SurveyOptions, run_survey
from tests.test_survey import py

SMALL = DetectSettings(num_images=2, batch_size=2, image_size=48)
SPECS = ["test_resnet", "test_efficientnet", py("tiny_cnn"), py("mlp")]

QUERIES = {
    "neurons": "SELECT model_id, config_id, layer, count(*), sum(is_pan::INT), round(sum(max_abs_own_z), 3), "
    "round(sum(kmass_top), 3), min(channel), max(channel) FROM {t} GROUP BY ALL ORDER BY ALL",
    "layers": "SELECT model_id, config_id, layer, layer_index, pans, strip_top, padding_kind FROM {t} ORDER BY ALL",
    "models": "SELECT * EXCLUDE (mean, std) FROM {t} ORDER BY model_id, config_id",
}


def results(root: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect()
    return {
        name: con.execute(q.format(t=f"read_parquet('{root}/{name}/*.parquet', union_by_name=true)")).fetchall()
        for name, q in QUERIES.items()
    }


def detect_into(root: Path, settings: DetectSettings) -> list[str]:
    """Write results the way `pans detect` does (in-process, no Ray); returns the keys."""
    store = ResultStore(root)
    store.ensure()
    keys = []
    for spec in SPECS:
        ref = resolve_spec(spec, random_init=True)[0]
        key = file_key(ref.model_id, settings.config_id)
        store.write_model(run_model(ref, settings), key)
        keys.append(key)
    return keys


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two configurations of four models, plus the orphan files of an interrupted model."""
    root = tmp_path_factory.mktemp("results")
    detect_into(root, SMALL)
    detect_into(root, replace(SMALL, tau=2.0))
    orphan = run_model(resolve_spec("test_convnext", random_init=True)[0], SMALL)
    ResultStore(root).write("neurons", "orphan-00000000-000000000000", orphan["neurons"])  # no models file
    return root


def copy_of(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_compaction_keeps_every_query_result_and_the_done_index(folder: Path, tmp_path: Path) -> None:
    root = copy_of(folder, tmp_path)
    before, done_before = results(root), ResultStore(root).done_keys()
    n_files = len(list((root / "neurons").glob("*.parquet")))

    report = compact(root, row_group_rows=100, file_rows=300)

    assert report.models == 8
    assert results(root) == before
    assert ResultStore(root).done_keys() == done_before
    assert all(ResultStore(root).is_done(k) for k in done_before)
    neurons = sorted((root / "neurons").glob("*.parquet"))
    assert (root / "neurons" / "orphan-00000000-000000000000.parquet") in neurons  # unfinished: left alone
    compacted = [p for p in neurons if is_compacted(p)]
    assert len(compacted) == len(neurons) - 1 < n_files
    for path in compacted:
        meta = pq.ParquetFile(path).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert meta.num_rows <= 300 and all(s <= 100 for s in sizes) and all(s == 100 for s in sizes[:-1])
    assert all(is_compacted(p) for p in (root / "models").glob("*.parquet"))
    assert not [p for p in (root / ".compact").iterdir() if p.is_dir()]  # staging cleaned up

    # A second compaction has nothing left to merge; the answers stay the same.
    assert compact(root).models == 0
    assert results(root) == before


def test_resume_after_compaction_skips_everything_without_starting_ray(folder: Path, tmp_path: Path) -> None:
    root = copy_of(folder, tmp_path)
    compact(root)
    summary = run_survey(SPECS, root, SMALL, SurveyOptions(random_init=True, progress="off"))
    assert (summary.skipped, summary.done, summary.failed) == (len(SPECS), 0, 0)
    assert not [p for p in (root / "models").glob("*.parquet") if not is_compacted(p)]


def test_a_crash_after_the_commit_point_is_rolled_forward(folder: Path, tmp_path: Path, monkeypatch) -> None:
    root = copy_of(folder, tmp_path)
    before = results(root)
    real_apply = compact_mod._apply

    def crash_half_way(root_: Path, journal: dict) -> None:
        first = dict(journal, tables={"neurons": journal["tables"]["neurons"]})
        real_apply(root_, first)  # neurons moved and deleted, layers and models not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(compact_mod, "_apply", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        compact(root)
    monkeypatch.setattr(compact_mod, "_apply", real_apply)
    assert recover(root) == 1
    assert results(root) == before
    assert any(is_compacted(p) for p in (root / "models").glob("*.parquet"))


def test_a_crash_before_the_commit_point_changes_nothing(folder: Path, tmp_path: Path, monkeypatch) -> None:
    root = copy_of(folder, tmp_path)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))

    def no_disk(path: Path, text: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(compact_mod, "_write_atomic", no_disk)
    with pytest.raises(OSError):
        compact(root)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet") if ".compact" not in p.parts) == files
    monkeypatch.undo()
    assert recover(root) == 0  # the uncommitted staging folder is dropped
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet")) == files


def test_one_compaction_at_a_time_and_clear_errors(folder: Path, tmp_path: Path) -> None:
    from tests.test_reliability import holding_lock

    root = copy_of(folder, tmp_path)
    with holding_lock(root, "survey") as pid:
        with pytest.raises(PanSurveyError, match=f"being written by `pans survey` \\(pid {pid} "):
            compact(root)
        assert recover(root) == 0  # recovery leaves a folder another process writes alone
    with pytest.raises(PanSurveyError, match="not a results folder"):
        compact(tmp_path / "nowhere")
    from pipeline.cli import main

    assert main(["compact", str(tmp_path / "nowhere")]) == 2
    assert main(["compact", str(root)]) == 0
