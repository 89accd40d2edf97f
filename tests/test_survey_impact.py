"""``pans survey --impact``: the impact experiments run inside each model's detect task on Ray.

Checks that each model gets its impact tables beside its detection tables (same file naming, and
the analysis views read them), that the impact settings are part of the run's configuration and
of resume, and that an impact failure is a ``failures`` row with stage ``impact`` while the
model's detection results are still written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import analysis
from pipeline.cli import main
from pipeline.impact.settings import ImpactSettings, impact_key
from pipeline.settings import DetectSettings
from pipeline.store import ResultStore, file_key
from pipeline.survey import SurveyOptions, run_survey

#: Random-init models are recalibrated on the probe (their null twin's regime), where they have no PANs
#: at the default tau 3; the ablation path needs some, so these runs classify at 1.5 (5-9 per model).
SMALL = DetectSettings(num_images=4, batch_size=8, image_size=48, tau=1.5)
QUIET = SurveyOptions(random_init=True, progress="off")
IMPACT = ImpactSettings(max_images=6, controls=2, padding_modes=("reflect",), border_patches=1, border_grid=3)
MODELS = {"resnet10t": "timm:resnet10t@random-init", "test_resnet": "timm:test_resnet@random-init"}
IMPACT_TABLES = ("impact", "impact_classes", "impact_border")


@pytest.mark.ray
@pytest.mark.slow
def test_survey_with_impact_writes_impact_tables_per_model(ray_local, tmp_path: Path) -> None:
    out = tmp_path / "results"
    specs = list(MODELS)
    first = run_survey(specs, out, SMALL, QUIET, impact=IMPACT)
    assert (first.done, first.failed, first.skipped) == (2, 0, 0), [(r.model_id, r.message) for r in first.models]
    assert first.impact_id == IMPACT.impact_id

    store = ResultStore(out)
    cfg = SMALL.config_id
    for model_id in MODELS.values():
        assert store.is_done(file_key(model_id, cfg))  # detection tables as without --impact
        key = impact_key(model_id, cfg, IMPACT.impact_id)
        for table in IMPACT_TABLES:
            assert store.path(table, key).is_file(), (table, model_id)

    con = analysis.open(out)
    rows = con.execute(
        "SELECT model_id, config_id, impact_id, count(*) FILTER (WHERE condition = 'intact'), "
        "count(*) FILTER (WHERE condition = 'random_control' AND metric = 'kl'), "
        "count(*) FILTER (WHERE condition = 'reflect') FROM impact GROUP BY ALL ORDER BY model_id"
    ).fetchall()
    assert [r[0] for r in rows] == sorted(MODELS.values())
    for model_id, config, impact_id, intact, controls, reflect in rows:
        assert (config, impact_id) == (cfg, IMPACT.impact_id)
        assert intact == 2 and reflect > 0  # images and pans; the padding counterfactual ran
        pans = con.execute("SELECT pans FROM models WHERE model_id = ?", [model_id]).fetchone()[0]
        intact_pans = con.execute(
            "SELECT value FROM impact WHERE model_id = ? AND condition = 'intact' AND metric = 'pans'", [model_id]
        ).fetchone()[0]
        assert intact_pans == pans  # the impact run used the neurons the same task detected
        assert controls == (2 if pans else 0)
    ablated = con.execute("SELECT count(DISTINCT model_id) FROM impact WHERE condition = 'pan_ablation'").fetchone()
    assert ablated[0] >= 1  # at least one model had PANs to ablate
    border = con.execute("SELECT count(DISTINCT model_id), min(samples) FROM impact_border").fetchone()
    assert border[0] == 2 and border[1] > 0
    assert con.execute("SELECT count(DISTINCT model_id) FROM impact_classes").fetchone()[0] == 2

    runs = store.read("runs").to_pylist()
    config = json.loads(runs[0]["config_json"])
    assert config["impact"]["controls"] == 2 and config["impact_id"] == IMPACT.impact_id
    assert config["detect_config_id"] == cfg and runs[0]["config_id"] != cfg
    assert set(store.read("models")["config_id"].to_pylist()) == {cfg}

    # Resume: the same survey skips everything; so does one without --impact (detection is done);
    # other impact settings are new work for every model.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet") if "runs" not in p.parts}
    assert run_survey(specs, out, SMALL, QUIET, impact=IMPACT).skipped == 2
    plain = run_survey(specs, out, SMALL, QUIET)
    assert plain.skipped == 2 and plain.config_id == cfg
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet") if "runs" not in p.parts} == stamps
    plain_run = next(r for r in store.read("runs").to_pylist() if r["run_id"] == plain.run_id)
    assert plain_run["config_id"] == cfg and "impact" not in json.loads(plain_run["config_json"])


@pytest.mark.ray
@pytest.mark.slow
def test_an_impact_failure_is_a_record_and_detection_is_kept(ray_local, tmp_path: Path) -> None:
    images = tmp_path / "images"
    for cls in ("not_a_class_of_imagenet", "tench"):
        (images / cls).mkdir(parents=True)
        Image.new("RGB", (40, 40), (90, 140, 60)).save(images / cls / "a.png")
    out = tmp_path / "results"
    bad = ImpactSettings(images=str(images), controls=1, padding_modes=(), border_patches=0)
    summary = run_survey(["test_resnet"], out, SMALL, QUIET, impact=bad)
    assert (summary.done, summary.failed) == (0, 1)
    rec = summary.models[0]
    assert (rec.status, rec.stage, rec.error_type) == ("failed", "impact", "LabelsError")
    assert "not_a_class_of_imagenet" in rec.message

    store = ResultStore(out)
    model_id = MODELS["test_resnet"]
    assert store.is_done(file_key(model_id, SMALL.config_id))  # the detection is written
    failures = store.read("failures").to_pylist()
    assert [(f["model_id"], f["stage"], f["config_id"]) for f in failures] == [(model_id, "impact", SMALL.config_id)]
    assert store.read("impact").num_rows == 0

    # Fixed labels, same settings otherwise: the rerun does the model again and clears its failure.
    (images / "not_a_class_of_imagenet").rename(images / "goldfish")
    again = run_survey(["test_resnet"], out, SMALL, QUIET, impact=bad)
    assert (again.done, again.failed) == (1, 0)
    assert store.read("failures").num_rows == 0
    accuracy = analysis.open(out).execute(
        "SELECT value FROM impact WHERE condition = 'intact' AND metric = 'accuracy'"
    ).fetchall()
    assert len(accuracy) == 1 and 0 <= accuracy[0][0] <= 1


def test_survey_impact_input_errors_are_one_line(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "results")
    assert main(["survey", "resnet10t", "--out", out, "--controls", "2"]) == 2
    err = capsys.readouterr().err
    assert "--controls only apply with --impact" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["survey", "resnet10t", "--out", out, "--impact", "--images", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
