"""Settings: ids that resume old folders, and one way from parsed arguments to settings."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli import build_parser
from pipeline.impact.settings import ImpactSettings, run_config_id
from pipeline.settings import DetectSettings


def test_ids_are_those_of_folders_written_before_settings_were_shared() -> None:
    # Pinned from the code before the settings shared one base: a changed hash (key order, a
    # renamed field, the version key) would make every old folder recompute every model.
    assert DetectSettings().config_id == "cad71d9ee3a9"
    assert ImpactSettings().impact_id == "07c635000531"
    assert run_config_id(DetectSettings(), ImpactSettings()) == "1493910b5c8e"
    assert run_config_id(DetectSettings(), None) == "cad71d9ee3a9"
    d = DetectSettings(probe="noise", num_images=8, image_size=64, tau=2.5, reference="mean", seed=3,
                       batch_size=4, device="cpu")
    i = ImpactSettings(max_images=16, seed=2, controls=3, padding_modes=("reflect",), batch_size=8)
    assert (d.config_id, i.impact_id, run_config_id(d, i)) == ("0bbcebe51fc3", "8091f7a15ab5", "2f113305597b")
    # speed knobs are not part of the ids
    assert DetectSettings(batch_size=1, device="cpu").config_id == DetectSettings().config_id
