"""The views survive schema growth, empty or missing table folders, and map every schema type."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analysis
from analysis.connection import duckdb_type
from pipeline.errors import PanSurveyError
from pipeline.schema import TABLES, table_from_rows
from pipeline.store import ResultStore


def neuron(model: str, channel: int, **extra) -> dict:
    return {
        "model_id": model,
        "config_id": "c1",
        "layer": "conv1",
        "layer_index": 0,
        "channel": channel,
        "own_z_top": 5.0,
        "is_pan": True,
        "pan_sides": "top",
        "pan_sign": "excited",
        "dead": False,
        **extra,
    }


def test_every_schema_type_has_a_duckdb_type():
    for schema in TABLES.values():
        for field in schema:
            assert duckdb_type(field.type)


def test_empty_folder_gives_typed_empty_views(tmp_path: Path):
    ResultStore(tmp_path).ensure()
    (tmp_path / "impact").rmdir()  # a folder written before impact existed
    con = analysis.open(tmp_path)
    for name, schema in TABLES.items():
        table = con.sql(f"SELECT * FROM {name}").to_arrow_table()
        assert table.num_rows == 0
        expected = list(schema.names) + (["family"] if name == "models" else [])
        assert table.column_names == expected
        if name == "neurons":
            assert table.schema.field("own_z_top").type == pa.float32()
            assert table.schema.field("kernel").type == pa.list_(pa.float32())
    for query in analysis.named_queries():  # every named query runs on nothing
        con.sql(f"SELECT * FROM {query.name}").fetchall()


def test_older_file_without_a_column_and_newer_file_with_it(tmp_path: Path):
    store = ResultStore(tmp_path)
    store.ensure()
    # Older writer: no kmass_* or border_informed columns at all.
    old = table_from_rows("neurons", [neuron("m-old", 0), neuron("m-old", 1, is_pan=False, pan_sides=None)])
    old = old.drop_columns([c for c in old.column_names if c.startswith("kmass_")] + ["border_informed"])
    pq.write_table(old, tmp_path / "neurons" / "old.parquet")
    # Newer writer: every column, plus one the schema does not know yet.
    new = table_from_rows("neurons", [neuron("m-new", 0, kmass_top=0.5, border_informed=False)])
    new = new.append_column("future_metric", pa.array([1.5], pa.float64()))
    pq.write_table(new, tmp_path / "neurons" / "new.parquet")

    con = analysis.open(tmp_path)
    got = {
        (r[0], r[1]): r[2:]
        for r in con.sql("SELECT model_id, channel, kmass_top, border_informed, future_metric FROM neurons").fetchall()
    }
    assert got == {("m-old", 0): (None, None, None), ("m-old", 1): (None, None, None), ("m-new", 0): (0.5, False, 1.5)}


def test_columns_missing_from_every_file_read_as_null(tmp_path: Path):
    store = ResultStore(tmp_path)
    store.ensure()
    old = table_from_rows("neurons", [neuron("m", 0)]).drop_columns(["kmass_left", "kernel"])
    pq.write_table(old, tmp_path / "neurons" / "only.parquet")
    con = analysis.open(tmp_path)
    assert con.sql("SELECT kmass_left, kernel FROM neurons").fetchall() == [(None, None)]


def test_not_a_results_folder(tmp_path: Path):
    with pytest.raises(PanSurveyError, match="does not exist"):
        analysis.open(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PanSurveyError, match="not a folder"):
        analysis.open(tmp_path / "file")
    with pytest.raises(PanSurveyError, match="tau must be"):
        analysis.open(tmp_path, tau=0)


def test_corrupt_file_is_a_one_line_error(tmp_path: Path):
    ResultStore(tmp_path).ensure()
    (tmp_path / "models" / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(PanSurveyError, match=r"models/broken.parquet is not a readable Parquet file .* verify"):
        analysis.open(tmp_path)
