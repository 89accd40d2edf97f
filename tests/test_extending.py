"""docs/extending.md, followed: a probe and an impact experiment, each one new file plus one registration.

Each recipe's new file is taken verbatim from the doc, written to a temporary folder and imported
like any module (the registration line). The impact experiment (``frame``: blank a frame of
``--frame-px`` pixels at the image border, see how predictions move) brings its own option, its own
table (``impact_frame``) and its own report panel; nothing else in the code base is edited, and
the test runs ``pans impact``, ``pans query`` and ``pans report`` and sees each part of it work.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

from pipeline.cli import build_parser, main
from pipeline.impact import registry
from pipeline.schema import TABLES
from tests.test_cli_impact import TRAINED, write_image_folder

DOCS = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def recipe_code(section: str) -> str:
    """The first Python block under ``## {section}`` of docs/extending.md: the recipe's new file."""
    text = DOCS.read_text()
    body = text[text.index(f"## {section}\n"):]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


def import_recipe(folder: Path, name: str, section: str, monkeypatch: pytest.MonkeyPatch):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(recipe_code(section))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


@pytest.fixture
def frame_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The recipe's module, imported from a temporary folder; the registry is restored afterwards."""
    monkeypatch.setattr(registry.EXPERIMENTS, "_items", dict(registry.EXPERIMENTS._items))
    yield import_recipe(tmp_path / "plugins", "frame_experiment", "Add an impact experiment", monkeypatch)
    TABLES.pop("impact_frame", None)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_registered_experiment_gets_its_option_its_table_and_its_panel(tmp_path: Path, frame_experiment) -> None:
    from pipeline.impact.settings import ImpactSettings

    # Its option: a flag of `pans impact` and `pans survey`, a settings field, part of impact_id.
    args = build_parser().parse_args(["impact", "x", "--out", "o", "--frame-px", "3"])
    assert args.frame_px == 3
    assert build_parser().parse_args(["survey", "x", "--out", "o"]).frame_px == 2
    assert ImpactSettings().frame_px == 2
    assert ImpactSettings(frame_px=3).impact_id != ImpactSettings().impact_id
    assert "impact_frame" in registry.output_tables() and registry.output_tables()[-1] == "impact"

    # End to end: `pans impact` runs it and writes its table ...
    images = write_image_folder(tmp_path / "images", n=16)
    out = tmp_path / "res"
    rc = main(["impact", TRAINED, "--out", str(out), "--images", str(images), "--probe", str(images),
               "--num-images", "16", "--controls", "1", "--padding-modes", "", "--border-patches", "0",
               "--frame-px", "3", "--device", "cpu"])
    assert rc == 0
    assert len(list((out / "impact_frame").glob("*.parquet"))) == 1
    # ... which `pans query` reads like any results table (one row per image) ...
    csv = tmp_path / "frame.csv"
    assert main(["query", str(out), "SELECT count(*) AS n, sum(top1_kept::INT) AS kept FROM impact_frame",
                 "-o", str(csv)]) == 0
    n, kept = (int(v) for v in csv.read_text().splitlines()[1].split(","))
    assert n == 16
    # The toy classifies by distance to the border: blanking a 3 px frame must move some predictions.
    assert kept < n
    assert main(["query", str(out), "SELECT value FROM impact WHERE condition = 'frame_3px' AND metric = 'kl'",
                 "-o", str(csv)]) == 0
    assert float(csv.read_text().splitlines()[1]) > 0
    # ... and `pans report` shows its panel in the impact section.
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--out", str(page)]) == 0
    assert f"top-1 kept on {kept / n:.0%}" in page.read_text()


def test_two_experiments_cannot_claim_the_same_option(frame_experiment) -> None:
    again = registry.register_experiment("frame_again", options=(registry.Option("frame_px", 1, "again"),))
    with pytest.raises(ValueError, match="frame_px"):
        again(lambda ctx: None)
    assert "frame_again" not in registry.EXPERIMENTS


def test_the_probe_recipe_registers_a_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.probes import PROBES, make_probe
    from pipeline.sources.base import Preprocess

    monkeypatch.setattr(PROBES, "_items", dict(PROBES._items))
    import_recipe(tmp_path / "plugins", "probe_checkerboard", "Add a probe", monkeypatch)
    pp = Preprocess(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    probe = make_probe("checkerboard", 3, pp, 0)
    assert probe.shape == (3, 3, 32, 32)
    assert sorted(torch.unique(probe).tolist()) == [-2.0, 2.0]  # (0 - 0.5) / 0.25 and (1 - 0.5) / 0.25
