"""The survey on a real local Ray runtime: every table written, counts consistent, resume, failures as data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.settings import DetectSettings
from pipeline.store import ResultStore, file_key
from pipeline.survey import SurveyOptions, run_survey

FACTORIES = Path(__file__).resolve().with_name("survey_factories.py")
SMALL = DetectSettings(num_images=4, batch_size=4, image_size=64)
QUIET = SurveyOptions(random_init=True, progress="off")


def py(name: str) -> str:
    """The spec of a factory, written as its model id is (portable: relative to the working directory)."""
    from pipeline.sources.base import portable_path

    return f"py:{portable_path(FACTORIES)}:{name}"


def consistent_models(out: Path) -> pa.Table:
    """Check every model's rows agree across tables; return the models table."""
    store = ResultStore(out)
    models, neurons, layers = store.read("models"), store.read("neurons"), store.read("layers")
    pairs = list(zip(models["model_id"].to_pylist(), models["config_id"].to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs)), "a (model, config) was written twice"
    n_counts = {
        (r["model_id"], r["config_id"]): r["count_all"]
        for r in neurons.group_by(["model_id", "config_id"]).aggregate([([], "count_all")]).to_pylist()
    }
    l_counts = {
        (r["model_id"], r["config_id"]): r["count_all"]
        for r in layers.group_by(["model_id", "config_id"]).aggregate([([], "count_all")]).to_pylist()
    }
    for row in models.to_pylist():
        key = (row["model_id"], row["config_id"])
        assert n_counts.get(key, 0) == row["padded_neurons"], key
        assert l_counts.get(key, 0) == row["conv_layers"], key
    return models


@pytest.mark.ray
def test_survey_writes_every_table_and_resumes(ray_local, tmp_path: Path) -> None:
    out = tmp_path / "results"
    specs = ["resnet10t", "mobilenetv3_small_050", py("tiny_cnn")]
    first = run_survey(specs, out, SMALL, QUIET)

    assert (first.done, first.failed, first.skipped) == (3, 0, 0)
    models = consistent_models(out)
    assert sorted(models["model_id"].to_pylist()) == sorted(
        [
            "timm:resnet10t@random-init",
            "timm:mobilenetv3_small_050@random-init",
            py("tiny_cnn") + "@random-init",
        ]
    )
    assert set(models["run_id"].to_pylist()) == {first.run_id}
    assert set(models["config_id"].to_pylist()) == {SMALL.config_id}
    assert set(models["device"].to_pylist()) == {"cpu"}
    assert pc.sum(models["padded_neurons"]).as_py() > 0
    assert first.pans == pc.sum(models["pans"]).as_py()
    runs = ResultStore(out).read("runs").to_pylist()
    assert [r["run_id"] for r in runs] == [first.run_id]
    assert runs[0]["specs"] == specs
    config = json.loads(runs[0]["config_json"])
    assert config["settings"]["num_images"] == 4 and config["survey"]["random_init"] is True
    assert ResultStore(out).read("failures").num_rows == 0

    # The same command again: nothing recomputed, nothing rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet") if "runs" not in p.parts}
    again = run_survey(specs, out, SMALL, QUIET)
    assert (again.done, again.skipped, again.models) == (0, 3, [])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet") if "runs" not in p.parts} == stamps

    # A speed knob is the same configuration; a changed threshold is a new one, told apart by config_id.
    assert run_survey(specs, out, replace(SMALL, batch_size=2), QUIET).skipped == 3
    other = replace(SMALL, tau=2.0)
    third = run_survey(specs, out, other, QUIET)
    assert third.done == 3 and third.config_id != first.config_id
    models = consistent_models(out)
    assert models.num_rows == 6
    import duckdb

    rows = (
        duckdb.connect()
        .execute(
            f"SELECT config_id, count(*), sum(pans) FROM read_parquet('{out}/models/*.parquet') GROUP BY 1 ORDER BY 1"
        )
        .fetchall()
    )
    assert sorted(r[0] for r in rows) == sorted([SMALL.config_id, other.config_id])
    assert all(r[1] == 3 for r in rows)


@pytest.mark.ray
@pytest.mark.slow
def test_failures_are_records_and_the_survey_goes_on(ray_local, tmp_path: Path) -> None:
    out = tmp_path / "results"
    specs = [
        py("tiny_cnn"),
        "no_such_model_xyz",
        py("broken"),
        py("mlp"),
        py("hangs"),
        py("oom_unless_small_batch"),
        py("always_oom"),
    ]
    summary = run_survey(specs, out, SMALL, SurveyOptions(timeout_per_model=8, progress="off"))

    by_id = {r.model_id: r for r in summary.models}
    assert {m for m, r in by_id.items() if r.status == "done"} == {
        py("tiny_cnn"),
        py("mlp"),
        py("oom_unless_small_batch"),
    }
    failures = {r["model_id"]: r for r in ResultStore(out).read("failures").to_pylist()}
    assert {m: r["stage"] for m, r in failures.items()} == {
        "no_such_model_xyz": "resolve",
        py("broken"): "load",
        py("hangs"): "timeout",
        py("always_oom"): "detect",
    }
    assert failures[py("always_oom")]["error_type"] == "OutOfMemoryError"
    assert failures[py("always_oom")]["attempt"] == 2  # retried once with a smaller batch, then recorded
    assert by_id[py("oom_unless_small_batch")].attempts == 2  # ... which is enough for this one
    assert all(r["run_id"] == summary.run_id and r["config_id"] == SMALL.config_id for r in failures.values())

    models = {r["model_id"]: r for r in consistent_models(out).to_pylist()}
    # A model without convolutions is a record saying so, not an error.
    assert models[py("mlp")]["conv_layers"] == 0 and models[py("mlp")]["padded_neurons"] == 0

    # A model that later succeeds is no longer failed; failed ones are retried on the next run.
    retry = run_survey([py("broken"), py("tiny_cnn")], out, SMALL, SurveyOptions(progress="off"))
    assert (retry.skipped, retry.failed) == (1, 1)
    key = file_key(py("broken"), SMALL.config_id)
    assert ResultStore(out).path("failures", key).is_file() and not ResultStore(out).is_done(key)


@pytest.mark.ray
@pytest.mark.shared_models
def test_survey_of_real_trained_weights(ray_local, shared_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    spec = f"local-dir:{shared_models / 'tf_efficientnet_lite0.in1k'}"
    summary = run_survey([spec, py("tiny_cnn")], out, replace(SMALL, image_size=96), SurveyOptions(progress="off"))
    assert (summary.done, summary.failed) == (2, 0)
    models = {r["source"]: r for r in consistent_models(out).to_pylist()}
    lite0 = models["local-dir"]
    assert lite0["pretrained"] is True and lite0["weights_sha256"].startswith("2b4a5f7e")
    assert lite0["padded_neurons"] > 1000


def test_survey_rejects_bad_input_in_one_line(tmp_path: Path) -> None:
    from pipeline.cli import main
    from pipeline.errors import PanSurveyError

    with pytest.raises(PanSurveyError, match="no models"):
        run_survey([], tmp_path / "r", SMALL, QUIET)
    with pytest.raises(PanSurveyError, match="gpus-per-model"):
        run_survey(["resnet10t"], tmp_path / "r", SMALL, replace(QUIET, gpus_per_model=1.5))
    assert main(["survey", "--out", str(tmp_path / "r")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["survey", "resnet10t", "--out", str(tmp_path / "r"), "--gpus-per-model", "1.5"])
    assert exc.value.code == 2


def test_an_unreachable_cluster_is_a_one_line_error_in_seconds(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    t0 = time.monotonic()
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "survey",
        "resnet10t",
        "--random-init",
        "--out",
        str(tmp_path / "r"),
        "--address",
        "127.0.0.1:9",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("pans survey: error: cannot reach Ray at 127.0.0.1:9")
    assert time.monotonic() - t0 < 60  # Ray alone would keep retrying for minutes


@pytest.mark.parametrize(
    "option,message",
    [
        (["--probe", "MISSING"], "does not exist"),
        (["--probe", "EMPTY"], "holds no images"),
        (["--probe", "bogus"], "unknown probe"),
        (["--device", "tpu"], "unknown device"),
    ],
)
def test_a_setting_wrong_for_every_model_stops_the_survey_before_it_starts(
    option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One error on the driver, exit 2, and no results folder: not a failure row per model."""
    from pipeline.cli import main

    (tmp_path / "empty").mkdir()
    option = [str(tmp_path / "missing") if o == "MISSING" else str(tmp_path / "empty") if o == "EMPTY" else o
              for o in option]
    out = tmp_path / "r"
    assert main(["survey", "resnet10t", "test_resnet", "--random-init", "--out", str(out), *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pans survey: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
