"""The report's footer says "every number here is also a named query": the report computes nothing in SQL.

Every statement the report runs reads named queries (analysis/sql/stats.sql, analysis/sql/report.sql)
or results tables, and does no aggregation, window or join of its own: those live in the named
queries, where ``pans query DIR @NAME`` gives the same numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import analysis
from analysis.named import all_queries, report_queries
from analysis.synthetic import build_folder
from pipeline.schema import TABLES, table_from_rows
from pipeline.store import ResultStore

COMPUTING = re.compile(r"\bGROUP\s+BY\b|\bOVER\s*\(|\bJOIN\b|\bFILTER\s*\(|\b(avg|sum|min|max|median|stddev_samp)\s*\(",
                       re.I)


class RecordingConnection:
    """A DuckDB connection that remembers every SQL text it is given."""

    def __init__(self, con: Any) -> None:
        self._con = con
        self.statements: list[str] = []

    def execute(self, sql: str, *args: Any) -> Any:
        self.statements.append(sql)
        return self._con.execute(sql, *args)

    def sql(self, sql: str, *args: Any) -> Any:
        self.statements.append(sql)
        return self._con.sql(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reportq") / "results"
    build_folder(root, models=5, neurons_per_model=150, failures=2, seed=2)
    base = {"config_id": "cfgsynthetic", "impact_id": "imp"}
    impact, classes = [], []
    for m in range(2):
        key = {**base, "model_id": f"timm:resnet50.synthetic_{m}"}
        for e, c, s, metric, v in (("intact", "intact", None, "pans", 4.0),
                                   ("ablation", "pan_ablation", None, "kl", 0.3),
                                   ("control", "random_control", 0, "kl", 0.01 * (m + 1)),
                                   ("ablation", "pan_vs_control", None, "kl_z", 3.0 + m)):
            impact.append({**key, "experiment": e, "condition": c, "seed": s, "metric": metric, "value": v})
        classes += [{**key, "experiment": "ablation", "condition": "pan_ablation", "class_index": k,
                     "prob_delta": (k - 3) / 10} for k in range(7)]
    store = ResultStore(root)
    store.write("impact_classes", "k", table_from_rows("impact_classes", classes))
    store.write("impact", "k", table_from_rows("impact", impact))
    return root


def test_the_report_only_reads_named_queries_and_tables(folder: Path, tmp_path: Path, monkeypatch) -> None:
    from analysis.report import build_report

    real_open = analysis.open
    recorders: list[RecordingConnection] = []

    def recording_open(*args: Any, **kwargs: Any) -> RecordingConnection:
        recorders.append(RecordingConnection(real_open(*args, **kwargs)))
        return recorders[-1]

    monkeypatch.setattr(analysis, "open", recording_open)
    build_report(folder, tmp_path / "report.html")
    statements = recorders[0].statements
    assert len(statements) > 20  # every section ran
    allowed = {q.name for q in all_queries()} | set(TABLES)
    for sql in statements:
        names = set(re.findall(r"\bFROM\s+([A-Za-z_]\w*)", sql, re.I))
        assert names and names <= allowed, sql
        assert not COMPUTING.search(sql), sql
    read = {name for sql in statements for name in re.findall(r"\bFROM\s+([A-Za-z_]\w*)", sql, re.I)}
    assert {q.name for q in report_queries()} <= read  # each report query is drawn


def test_report_queries_answer_from_the_cli_with_their_own_invariants(folder: Path) -> None:
    con = analysis.open(folder)
    for query in report_queries():
        table = con.sql(f"SELECT * FROM {query.name}").to_arrow_table()
        assert "config_id" in table.column_names, query.name
    ranked = con.execute("SELECT model_id, model_rank, strength FROM strongest_pans "
                         "ORDER BY model_id, model_rank").fetchall()
    pans = dict(con.execute("SELECT model_id, pans FROM pans_per_model").fetchall())
    by_model: dict[str, list[tuple[int, float]]] = {}
    for model_id, rank, strength in ranked:
        by_model.setdefault(model_id, []).append((rank, strength))
    assert {m: len(v) for m, v in by_model.items()} == {m: n for m, n in pans.items() if n}  # every PAN once
    for rows in by_model.values():
        assert [r for r, _ in rows] == list(range(1, len(rows) + 1))  # ranked within its own model
        strengths = [s for _, s in rows]
        assert strengths == sorted(strengths, reverse=True)
    shifts = con.execute("SELECT model_id, count(*), max(abs(prob_delta)) FROM impact_class_shifts "
                         "GROUP BY 1").fetchall()
    assert sorted((m, n, round(top, 9)) for m, n, top in shifts) == [
        ("timm:resnet50.synthetic_0", 5, 0.3), ("timm:resnet50.synthetic_1", 5, 0.3)]
