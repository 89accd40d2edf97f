"""The survey's records, its pre-run checks and the command's summary, apart from the Ray loop."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.commands.survey import print_summary
from pipeline.errors import PanSurveyError
from pipeline.settings import DetectSettings
from pipeline.survey.records import ModelRecord, SurveyOptions, SurveySummary

REPO = Path(__file__).resolve().parents[1]


def test_progress_and_records_import_neither_the_driver_nor_ray() -> None:
    # The progress display once imported the driver for its types (and the driver imported it).
    code = ("import json, sys, pipeline.survey.progress, pipeline.survey.records; "
            "print(json.dumps([m for m in ('pipeline.survey.driver', 'ray', 'torch') if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_survey_package_and_the_driver_still_export_the_records() -> None:
    import pipeline.survey as survey
    from pipeline.survey import driver

    assert survey.SurveyOptions is driver.SurveyOptions is SurveyOptions
    assert survey.ModelRecord is driver.ModelRecord is ModelRecord
    assert survey.SurveySummary is driver.SurveySummary is SurveySummary
    assert survey.run_survey is driver.run_survey


def _summary(failures: int, impact_id: str | None = None) -> SurveySummary:
    models = [ModelRecord("good", "k0", "done", pans=3, padded_neurons=40)]
    models += [ModelRecord(f"bad{i}", f"k{i}", "failed", "fetch", "HubError", f"no such repo {i}")
               for i in range(failures)]
    return SurveySummary("run1", "cfg1", Path("/r"), len(models) + 2, 2, 30.0, models, folder_models=3,
                         folder_pans=7, impact_id=impact_id)


def test_summary_lists_ten_failures_then_counts_the_rest() -> None:
    out = io.StringIO()
    print_summary(_summary(12), out)
    text = out.getvalue()
    assert "survey run1" in text and "config cfg1" in text
    assert text.count("  failed: bad") == 10 and "failed: bad10" not in text
    assert "... and 2 more (see /r/failures/)" in text
    assert "folder total for this config: 3 models, 7 PANs" in text
    assert "impact:" not in text
    row = next(line for line in text.splitlines() if "30.0 s" in line)
    assert [c for c in row.replace("│", " ").split() if c.isdigit()] == ["15", "1", "2", "12", "3", "40"]


def test_summary_names_the_impact_settings_when_impact_ran() -> None:
    out = io.StringIO()
    print_summary(_summary(0, impact_id="imp123"), out)
    assert "impact settings imp123" in out.getvalue() and "failed:" not in out.getvalue()


@pytest.mark.parametrize(("options", "message"), [
    (SurveyOptions(max_downloads=0), "--max-downloads must be at least 1"),
    (SurveyOptions(gpus_per_model=1.5), "--gpus-per-model 1.5"),
])
def test_options_no_survey_can_run_with_are_one_error(options: SurveyOptions, message: str) -> None:
    with pytest.raises(PanSurveyError, match=message):
        options.check()
    SurveyOptions(gpus_per_model=0.5, max_downloads=1).check()


def test_device_is_checked_fully_only_on_an_embedded_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert SurveyOptions().embedded and not SurveyOptions(address="auto").embedded
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert not SurveyOptions().embedded
    settings = DetectSettings(device="cuda:0")
    settings.check(embedded=False)  # a cluster's nodes may have the GPU this driver lacks
    with pytest.raises(PanSurveyError, match="unknown device"):
        DetectSettings(device="tpu").check(embedded=False)
    with pytest.raises(PanSurveyError, match="unknown probe"):
        DetectSettings(probe="fotos").check(embedded=False)
    if not torch.cuda.is_available():
        with pytest.raises(PanSurveyError, match="CUDA is not available"):
            settings.check(embedded=True)
