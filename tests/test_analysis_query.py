"""``pans query`` and ``pans stats`` through the real CLI: output formats, named queries, read-only SQL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from analysis.synthetic import build_folder
from pipeline.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("query") / "results"
    build_folder(root, models=4, neurons_per_model=120, failures=1, seed=3)
    return root


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_query_prints_a_table(folder, capsys):
    assert main(["query", str(folder), "SELECT model_id, pans FROM models ORDER BY model_id"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["model_id", "pans"]
    assert out[-1] == "(4 rows)"
    assert out[2].startswith("timm:")


def test_named_query_and_list(folder, capsys):
    assert main(["query", str(folder), "@pans_by_kernel", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {"kernel", "pans", "pan_pct"} <= set(rows[0])
    assert main(["query", str(folder), "--list"]) == 0
    listing = capsys.readouterr().out
    assert "@pans_per_model" in listing and "pans_at(tau)" in listing


def test_query_writes_csv_and_json_files(folder, tmp_path, capsys):
    out_csv = tmp_path / "n.csv"
    assert (
        main(
            [
                "query",
                str(folder),
                "SELECT model_id, channel, kernel, own_z_top FROM neurons ORDER BY 1, 2 LIMIT 5",
                "--format",
                "csv",
                "--output",
                str(out_csv),
            ]
        )
        == 0
    )
    assert "5 rows written" in capsys.readouterr().out
    with out_csv.open() as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == 5 and json.loads(records[0]["kernel"])  # list columns as JSON arrays
    out_json = tmp_path / "m.json"
    assert main(["query", str(folder), "@overview", "--format", "json", "-o", str(out_json)]) == 0
    assert json.loads(out_json.read_text())[0]["models"] == 4


def test_query_output_format_follows_the_file_extension(folder, tmp_path):
    sql = "SELECT model_id, pans FROM models ORDER BY 1"
    assert main(["query", str(folder), sql, "-o", str(tmp_path / "m.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(rows) == 4 and set(rows[0]) == {"model_id", "pans"}
    assert main(["query", str(folder), sql, "-o", str(tmp_path / "m.json")]) == 0
    assert len(json.loads((tmp_path / "m.json").read_text())) == 4
    assert main(["query", str(folder), sql, "-o", str(tmp_path / "m.txt")]) == 0
    assert "(4 rows)" in (tmp_path / "m.txt").read_text()  # no extension we know: the table


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("COPY (SELECT * FROM neurons) TO '{dir}/neurons/evil.parquet'", "COPY writes files"),
        ("COPY models TO '/tmp/pans-evil.csv'", "COPY writes files"),
        ("DELETE FROM models", "DELETE modifies"),
        ("CREATE TABLE x AS SELECT 1", "CREATE defines"),
        ("INSERT INTO models (model_id, config_id) VALUES ('a', 'b')", "INSERT modifies"),
        ("ATTACH '{dir}/other.duckdb'", "ATTACH opens"),
        ("SET enable_external_access = true", "SET changes settings"),
        ("DROP VIEW models", "DROP removes"),
        ("INSTALL httpfs", "INSTALL/LOAD"),
        ("EXPORT DATABASE '{dir}/dump'", "EXPORT writes"),
        ("SELECT 1; DELETE FROM models", "one SQL statement at a time"),
    ],
)
def test_query_rejects_writes(folder, capsys, sql, why):
    before = files_of(folder)
    assert main(["query", str(folder), sql.format(dir=folder)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err  # one line, no traceback
    assert err[0].startswith("pans query: error:") and why in err[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert files_of(folder) == before  # nothing written, nothing removed
    assert not Path("/tmp/pans-evil.csv").exists()


def test_query_cannot_read_outside_the_folder(folder, capsys):
    assert main(["query", str(folder), "SELECT * FROM read_csv('/etc/passwd')"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "query failed" in err[0]


def test_bad_sql_and_bad_names_are_one_line_errors(folder, capsys):
    for args in (["SELEKT 1"], ["SELECT nope FROM models"], ["@no_such_query"], [""]):
        assert main(["query", str(folder), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pans query: error:"), err
    assert main(["query", str(folder.parent / "missing"), "SELECT 1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_query_reclassifies_with_tau(folder, capsys):
    assert main(["query", str(folder), "SELECT sum(pans) FROM pans_per_model", "--format", "csv"]) == 0
    stored = int(capsys.readouterr().out.splitlines()[1])
    assert main(["query", str(folder), "SELECT sum(pans) FROM pans_per_model", "--format", "csv", "--tau", "1.5"]) == 0
    loose = int(capsys.readouterr().out.splitlines()[1])
    assert loose > stored


def test_stats_prints_every_named_table(folder, capsys):
    import analysis

    assert main(["stats", str(folder)]) == 0
    out = capsys.readouterr().out
    for query in analysis.named_queries():
        assert f"== {query.name}:" in out
    assert "config_id" not in out  # one configuration: named in the header, not on every line
    assert main(["stats", str(folder), "--only", "pans_by_side", "--format", "json", "--tau", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == ["pans_by_side"] and data["pans_by_side"]
    assert main(["stats", str(folder), "--only", "nope"]) == 2
    assert "no named query 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "sql",
    [
        "DESCRIBE neurons",
        "SUMMARIZE models",
        "EXPLAIN SELECT * FROM models",
        "FROM models SELECT model_id",
        "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
        "SELECT * FROM named_queries",
    ],
)
def test_query_allows_read_only_statements(folder, capsys, sql):
    assert main(["query", str(folder), sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out.strip()
