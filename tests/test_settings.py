"""Settings: ids that resume old folders, and one way from parsed arguments to settings."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli import build_parser
from pipeline.impact.settings import ImpactSettings, run_config_id
from pipeline.settings import DetectSettings
from pipeline.survey.records import SurveyOptions
from pipeline.version import DETECTOR_VERSION


def test_ids_are_those_of_folders_written_before_settings_were_shared() -> None:
    # Pinned: a changed hash (key order, a renamed field, the version key) would make every old
    # folder recompute every model. Impact ids are those from before the settings shared one base;
    # detection ids changed knowingly with detector 1.2 (one side per side) and the null twin's
    # settings (the same ids were computed on the null-twin branch before the merge), and again with
    # null-twin version 2 (a --random-init model fitted to the probe exactly as its twin is), and
    # with the default tau 3.5 (calibrated on the one-per-family zoo's twins, docs/calibration.md), and
    # with null-twin version 3 (random-init weights drawn without the overwritten default init).
    assert DetectSettings().config_id == "2a870b163224"
    assert ImpactSettings().impact_id == "07c635000531"
    assert run_config_id(DetectSettings(), ImpactSettings()) == "b602e9f768c6"
    assert run_config_id(DetectSettings(), None) == "2a870b163224"
    d = DetectSettings(probe="noise", num_images=8, image_size=64, tau=2.5, reference="mean", seed=3,
                       batch_size=4, device="cpu")
    i = ImpactSettings(max_images=16, seed=2, controls=3, padding_modes=("reflect",), batch_size=8)
    assert (d.config_id, i.impact_id, run_config_id(d, i)) == ("d2d26a71fefc", "8091f7a15ab5", "d39a05a6638c")
    # speed knobs are not part of the ids
    assert DetectSettings(batch_size=1, device="cpu").config_id == DetectSettings().config_id


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", [("detect", "m"), ("impact", "m"), ("survey", "m")])
def test_every_detection_setting_has_an_option_with_the_settings_default(command: tuple[str, ...]) -> None:
    # from_args reads fields by option name: a field without an option (or one renamed) would
    # silently keep its default, and an option default that differs from the field's would give
    # the command line and the Python API different config ids for "the defaults".
    args = _parse(*command, "--out", "o")
    assert set(DetectSettings.field_names()) <= set(vars(args))
    assert DetectSettings.from_args(args) == DetectSettings()


@pytest.mark.parametrize("command", [("impact", "m"), ("survey", "m", "--impact")])
def test_every_impact_setting_has_an_option_with_the_settings_default(command: tuple[str, ...]) -> None:
    args = _parse(*command, "--out", "o")
    assert set(ImpactSettings.field_names()) <= set(vars(args))
    # seed, batch size and device are the detection options, shared (the batch default is detection's)
    assert ImpactSettings.from_args(args) == ImpactSettings(batch_size=DetectSettings().batch_size)


def test_from_args_reads_every_given_option(tmp_path) -> None:
    args = _parse("survey", "m", "--out", "o", "--impact", "--seed", "5", "--batch-size", "2", "--device", "cpu",
                  "--probe", "noise", "--tau", "2.5", "--image-size", "48", "--controls", "3", "--max-images", "9",
                  "--padding-modes", "reflect", "--images", str(tmp_path), "--gpus-per-model", "0.5",
                  "--max-downloads", "2", "--random-init", "--progress", "off")
    assert DetectSettings.from_args(args) == DetectSettings(seed=5, batch_size=2, device="cpu", probe="noise",
                                                            tau=2.5, image_size=48)
    assert ImpactSettings.from_args(args) == ImpactSettings(seed=5, batch_size=2, device="cpu", controls=3,
                                                            max_images=9, padding_modes=("reflect",),
                                                            images=str(tmp_path))
    assert SurveyOptions.from_args(args) == SurveyOptions(gpus_per_model=0.5, max_downloads=2, random_init=True,
                                                          progress="off")


def test_updated_ignores_unknown_names_and_none() -> None:
    s = DetectSettings(tau=2.0)
    assert s.updated(tau=None, seed=4, nonsense=1) == DetectSettings(tau=2.0, seed=4)
    assert DetectSettings(**s.to_dict()) == s
    from pipeline.null_twin import null_settings

    assert s.result_settings() == {"probe": "photos", "num_images": 16, "image_size": None, "tau": 2.0,
                                   "reference": "replicate", "seed": 0, "null": True,
                                   "detector_version": DETECTOR_VERSION, "null_twin": null_settings()}


def test_impact_ids_hash_the_image_folder_as_an_absolute_path(tmp_path, monkeypatch) -> None:
    # Two runs naming the same folder from different working directories resume each other.
    (tmp_path / "imgs").mkdir()
    monkeypatch.chdir(tmp_path)
    relative = ImpactSettings(images="imgs")
    assert relative.impact_id == ImpactSettings(images=str(tmp_path / "imgs")).impact_id
    assert relative.result_settings()["images"] == str(tmp_path / "imgs")
    assert relative.impact_id != ImpactSettings().impact_id
