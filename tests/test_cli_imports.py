"""Commands that only read results (and ``--help`` of every command) load neither torch, timm nor ray.

Each runs in a fresh Python process (``pans`` as a user starts it) that then lists which of the
heavy modules ended up in ``sys.modules``. PyTorch's import alone takes 1.5 s or more: a command
registry or an option definition that imports it at the top makes every ``pans query`` pay it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.synthetic import build_folder
from pipeline.commands import COMMANDS
from pipeline.schema import table_from_rows
from pipeline.store import ResultStore

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "ray")

_RUNNER = """
import contextlib, io, json, sys
from pipeline.cli import main
try:
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _heavy_modules_after(argv: list[str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(argv)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, (argv, proc.stderr)
    return result["heavy"]


def _results_with_impact_rows(root: Path) -> Path:
    """A synthetic results folder with impact rows of every built-in experiment (the report draws their panels)."""
    build_folder(root, models=3, neurons_per_model=60, failures=1)
    base = {"model_id": "timm:resnet50.synthetic_0", "config_id": "cfgsynthetic", "impact_id": "imp"}
    rows = [
        {**base, "experiment": e, "condition": c, "seed": s, "metric": m, "value": v}
        for e, c, s, m, v in (
            ("intact", "intact", None, "pans", 3.0),
            ("ablation", "pan_ablation", None, "kl", 0.2),
            ("control", "random_control", 0, "kl", 0.01),
            ("padding", "reflect", None, "top1_agreement", 0.9),
        )
    ]
    border = [{**base, "condition": "intact", "distance_px": d, "confidence": 0.5} for d in (0, 4)]
    store = ResultStore(root)
    store.write("impact_border", "k", table_from_rows("impact_border", border))
    store.write("impact", "k", table_from_rows("impact", rows))
    return root


def test_reading_commands_do_not_import_torch_timm_or_ray(tmp_path: Path) -> None:
    root = str(_results_with_impact_rows(tmp_path / "results"))
    for argv in (
        ["query", root, "select 1"],
        ["query", root, "@pans_per_model"],
        ["stats", root],
        ["report", root, "--out", str(tmp_path / "report.html")],
    ):
        assert _heavy_modules_after(argv) == [], argv
    page = (tmp_path / "report.html").read_text()
    assert "PAN ablation against matched controls" in page and "Confidence against distance to the border" in page


def test_help_of_every_command_does_not_import_torch_timm_or_ray() -> None:
    for name in ["--help", *(f"{command} --help" for command in COMMANDS.names())]:
        assert _heavy_modules_after(name.split()) == [], name


def test_a_survey_driver_reaches_ray_start_without_torch() -> None:
    # `pans survey` starts Ray while the specs resolve (importing timm and torch takes seconds on a
    # small machine); anything on the way that imports torch first (a config id, a settings check, the
    # sources registry, the probe check) makes the two one after the other again.
    code = """
import json, sys
from pipeline.settings import DetectSettings
from pipeline.survey.driver import run_survey
from pipeline.survey.records import SurveyOptions
s = DetectSettings()
s.check(embedded=True)
SurveyOptions().check()
_ = s.config_id
print(json.dumps([m for m in ("torch", "timm") if m in sys.modules]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


@pytest.mark.ray
def test_a_fresh_survey_process_never_imports_torch(tmp_path: Path) -> None:
    # A fresh `pans survey` resolves its specs and estimates its first models on a detect worker
    # (pipeline/survey/plan.py), which imports torch and timm anyway: the driver's own import of them
    # was 3.3 s of CPU that Ray's start and the workers' imports waited for on a small machine.
    # A broken spec still ends as a failure record, resolved on the worker.
    out = tmp_path / "results"
    argv = ["survey", "test_resnet", "no_such_net_xyz", "--random-init", "--num-images", "2", "--image-size", "32",
            "--progress", "off", "--out", str(out)]
    proc = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(argv)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == ["ray"], proc.stderr[-2000:]
    assert result["code"] == 0  # one model done (a survey fails only when nothing was)
    models = ResultStore(out).read("models").to_pylist()
    failures = ResultStore(out).read("failures").to_pylist()
    assert [m["model_id"] for m in models] == ["timm:test_resnet@random-init"] and models[0]["padded_neurons"] > 0
    assert [(f["model_id"], f["stage"]) for f in failures] == [("no_such_net_xyz", "resolve")]


@pytest.mark.ray
@pytest.mark.parametrize("option", [["--gpus-per-model", "2"], ["--cpus-per-model", "64"]])
def test_a_fresh_survey_process_refuses_a_request_no_node_meets(tmp_path: Path, option: list[str]) -> None:
    # The worker task that resolves a fresh driver's specs takes one CPU, not a detect task's request:
    # asking it for 2 GPUs on this GPU-less runtime would leave it queued for ever, the survey silent.
    argv = ["pans", "survey", "test_resnet", "--random-init", *option, "--out", str(tmp_path / "r")]
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *argv[1:]], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot grow" in proc.stderr and "Traceback" not in proc.stderr
