"""The PAN rule exists once (pipeline/detect/classify.py); the SQL macro ``pans_at`` must agree with it
on real detector output, and PANs are counted in constant-padding layers only.

The net below has one layer of each padding mode; its reflect, replicate and circular layers get
large own responses against the replicate reference, which the old rule counted as PANs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import analysis
from pipeline.cli import main
from pipeline.detect.classify import CONSTANT_RULE, MEASURED_ONLY, classify
from pipeline.runner import run_model
from pipeline.schema import SIDES
from pipeline.settings import DetectSettings
from pipeline.store import ResultStore, file_key

TAU = 2.0
MODES = {m: m for m in ("zeros", "constant", "reflect", "replicate", "circular")}  # layer name: padding_mode


class MixedPadding(nn.Module):
    """One 3x3 convolution per padding mode (the constant one through ``F.pad(value=0.5)``).

    A fixed bowl-shaped map is added to the first layer's output (as a position embedding would):
    opposite edges then differ (circular padding reads the far edge) and the edge is curved
    (reflect padding reads the next pixel in), so those modes answer the replicate reference.
    """

    def __init__(self) -> None:
        super().__init__()
        self.zeros = nn.Conv2d(3, 16, 3, padding=1)
        self.constant = nn.Conv2d(16, 16, 3)
        self.reflect = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
        self.replicate = nn.Conv2d(16, 16, 3, padding=1, padding_mode="replicate")
        self.circular = nn.Conv2d(16, 16, 3, padding=1, padding_mode="circular")
        r = torch.linspace(-1.0, 1.0, 20)
        self.register_buffer("bowl", (2.0 * r.view(-1, 1) ** 2 + 3.0 * r.view(1, -1) ** 2 + 3.0 * r.view(1, -1)))
        self.pretrained_cfg = {"input_size": (3, 20, 20), "mean": (0.5,) * 3, "std": (0.25,) * 3, "crop_pct": 1.0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.zeros(1.0 + 0.1 * x)) + self.bowl  # a dim, offset input: zero padding stands out
        x = F.relu(self.constant(F.pad(x, (1, 1, 1, 1), value=0.5)))
        x = F.relu(self.reflect(x))
        x = F.relu(self.replicate(x))
        x = F.relu(self.circular(x))
        return x.mean(dim=(2, 3))


def mixed_padding_net() -> nn.Module:
    torch.manual_seed(0)
    return MixedPadding()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rule") / "results"
    settings = DetectSettings(probe="noise", num_images=8, tau=TAU, device="cpu")
    tables = run_model(f"py:{__file__}:mixed_padding_net", settings)
    store = ResultStore(root)
    store.ensure()
    store.write_model(tables, file_key(tables["models"]["model_id"][0].as_py(), settings.config_id))
    return root


def _python_rule(rows: list[dict], tau: float) -> dict[tuple, tuple]:
    """The one Python rule applied to the stored z-scores of every row."""
    out = {}
    for r in rows:
        own = np.array([[np.nan if r[f"own_z_{s}"] is None else r[f"own_z_{s}"] for s in SIDES]])
        obs = np.array([[np.nan if r[f"obs_z_{s}"] is None else r[f"obs_z_{s}"] for s in SIDES]])
        c = classify(own, obs, np.array([r["dead"]]), tau, r["pan_rule"] or CONSTANT_RULE)
        out[(r["layer"], r["channel"])] = (
            bool(c["is_pan"][0]), c["pan_sides"][0], c["pan_sign"][0], bool(c["border_informed"][0])
        )
    return out


def _macro(con, tau: float) -> dict[tuple, tuple]:
    rows = con.sql(f"SELECT * FROM pans_at({tau})").to_arrow_table().to_pylist()
    return {
        (r["layer"], r["channel"]): (r["is_pan"], r["pan_sides"], r["pan_sign"], r["border_informed"]) for r in rows
    }


def test_every_padding_mode_is_measured_with_its_rule(folder: Path):
    con = analysis.open(folder)
    layers = dict(con.execute("SELECT layer, padding_mode FROM layers").fetchall())
    assert layers == MODES
    rules = dict(con.execute("SELECT DISTINCT layer, pan_rule FROM neurons").fetchall())
    assert rules == {layer: CONSTANT_RULE if mode in ("zeros", "constant") else MEASURED_ONLY
                     for layer, mode in layers.items()}


def test_non_constant_layers_store_their_responses_but_hold_no_pans(folder: Path):
    """Reflect and circular padding do answer against the replicate reference (stored as measured);
    counting them as PANs (the old rule) would add these neurons to the model's count."""
    con = analysis.open(folder)
    strong = dict(con.execute(
        f"SELECT layer, count(*) FILTER (WHERE max_abs_own_z >= {TAU} AND NOT dead) FROM neurons GROUP BY layer"
    ).fetchall())
    assert strong["reflect"] > 0 and strong["circular"] > 0  # what the old rule called PANs
    assert strong["replicate"] == 0  # replicate padding *is* the reference: exactly no response
    assert strong["zeros"] > 0
    pans = dict(con.execute("SELECT layer, count(*) FILTER (WHERE is_pan) FROM neurons GROUP BY layer").fetchall())
    assert pans["reflect"] == pans["replicate"] == pans["circular"] == 0
    assert pans["zeros"] == strong["zeros"] and pans["constant"] == strong["constant"]
    models = con.execute("SELECT pans FROM models").fetchall()[0][0]
    assert models == pans["zeros"] + pans["constant"]


@pytest.mark.parametrize("tau", [1.0, TAU, 4.0])
def test_sql_macro_agrees_with_the_python_rule_on_detector_output(folder: Path, tau: float):
    con = analysis.open(folder)
    rows = con.sql("SELECT * FROM neurons").to_arrow_table().to_pylist()
    expected = _python_rule(rows, tau)
    assert _macro(con, tau) == expected
    assert sum(v[0] for v in expected.values()) > 0  # some PANs, so the comparison has teeth
    sweep = con.execute(f"SELECT pans FROM pan_count_sweep([{tau}])").fetchall()
    assert sweep == [(sum(v[0] for v in expected.values()),)]
    if tau == TAU:  # what the detector stored is the same rule at its own tau
        stored = {(r["layer"], r["channel"]): (r["is_pan"], r["pan_sides"], r["pan_sign"], r["border_informed"])
                  for r in rows}
        assert stored == expected


def test_a_macro_that_ignores_the_padding_mode_would_be_caught(folder: Path):
    """The old macro (PAN = not dead and max |own_z| >= tau, whatever the mode) differs from the rule here."""
    con = analysis.open(folder)
    rows = con.sql("SELECT * FROM neurons").to_arrow_table().to_pylist()
    for r in rows:
        r["pan_rule"] = CONSTANT_RULE  # what ignoring the mode amounts to
    old = _python_rule(rows, TAU)
    assert old != _macro(con, TAU)


def test_folder_without_pan_rule_still_reads(folder: Path, tmp_path: Path, capsys):
    """A folder written before detector 1.2 has no pan_rule column: NULL, counted as written, no crash."""
    old = tmp_path / "old"
    for path in folder.rglob("*.parquet"):
        target = old / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        table = pq.read_table(path)
        if "pan_rule" in table.column_names:
            table = table.drop_columns(["pan_rule"])
        pq.write_table(table, target)
    con = analysis.open(old)
    assert con.execute("SELECT count(*) FROM neurons WHERE pan_rule IS NOT NULL").fetchall() == [(0,)]
    # Before 1.2 every padding mode was counted: pans_at re-counts such rows by that rule.
    old_rule = con.execute(f"SELECT count(*) FROM neurons WHERE NOT dead AND max_abs_own_z >= {TAU}").fetchall()
    assert con.execute(f"SELECT count(*) FILTER (WHERE is_pan) FROM pans_at({TAU})").fetchall() == old_rule
    assert main(["stats", str(old)]) == 0
    assert main(["query", str(old), "SELECT count(pan_rule) AS n FROM neurons"]) == 0
    assert main(["report", str(old), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 0
    capsys.readouterr()
