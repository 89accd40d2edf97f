"""The macros and named queries installed on every results connection.

Named queries live in ``analysis/sql/stats.sql`` (one block per query: ``-- name:``, ``-- about:``,
one SELECT), so a new statistic is one SQL block, reachable as ``pans query DIR @name`` and printed
by ``pans stats``; ``analysis/sql/report.sql`` holds, in the same format, the other queries the
report draws (views too, not printed by ``pans stats``). They all read two small helper relations built here:

- ``neuron_groups``: neurons of finished models, counted per (model, config, layer, class), where
  the class is (is_pan, pan_sides, pan_sign, dead, border_informed) and ``family`` comes from models.
- ``layer_groups``: the same joined with the layer's attributes (depth, kernel, stride, padding ...).

Counting once per layer and class is what makes the statistics fast: ten million neurons become
some hundred thousand groups, and with ``materialize`` that aggregation runs once for all queries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pipeline.errors import PanSurveyError

_BLOCK = re.compile(
    r"^-- name:\s*(?P<name>\w+)\s*\n-- about:\s*(?P<about>.+?)\s*\n(?P<sql>.*?)(?=^-- name:|\Z)", re.M | re.S
)

_NEURON_GROUPS = """
WITH g AS (
    SELECT model_id, config_id, layer_index,
           coalesce(is_pan, false) AS is_pan, pan_sides, pan_sign,
           coalesce(dead, false) AS dead, coalesce(border_informed, false) AS border_informed,
           count(*)::BIGINT AS n
    FROM neurons_classified
    GROUP BY ALL
)
SELECT g.model_id, g.config_id, m.family, g.layer_index, g.is_pan, g.pan_sides, g.pan_sign,
       g.dead, g.border_informed, g.n
FROM g JOIN (SELECT DISTINCT model_id, config_id, family FROM models) m USING (model_id, config_id)
"""

#: Null twins' neurons (pipeline/null_twin.py) counted per twin and config, classified like the
#: models' neurons (stored, or re-classified by the same rule at --tau). Empty for older folders.
_NULL_GROUPS = """
SELECT model_id AS null_model_id, config_id,
       count(*)::BIGINT AS null_padded_neurons,
       count_where(coalesce(is_pan, false), 1) AS null_pans
FROM null_classified GROUP BY ALL
"""

_LAYER_GROUPS = """
SELECT g.*, l.layer, l.relative_depth, l.conv_type, l.kernel_h, l.kernel_w, l.stride_h, l.stride_w,
       l.dilation_h, l.dilation_w, l.padding_kind, l.padding_mode
FROM neuron_groups g
LEFT JOIN (SELECT DISTINCT ON (model_id, config_id, layer_index) * FROM layers) l
  USING (model_id, config_id, layer_index)
"""


@dataclass(frozen=True)
class NamedQuery:
    name: str
    about: str
    sql: str


def _sql_text(name: str) -> str:
    return resources.files("analysis").joinpath("sql", name).read_text(encoding="utf-8")


def _shared_sql() -> str:
    """The statements of stats.sql before its first named query (macros its queries share)."""
    return _sql_text("stats.sql").split("\n-- name:", 1)[0]


def _parse(file: str) -> tuple[NamedQuery, ...]:
    return tuple(
        NamedQuery(m.group("name"), m.group("about"), m.group("sql").strip().rstrip(";").strip())
        for m in _BLOCK.finditer(_sql_text(file))
    )


@cache
def named_queries() -> tuple[NamedQuery, ...]:
    """The named queries of analysis/sql/stats.sql, in file order (what ``pans stats`` prints)."""
    return _parse("stats.sql")


@cache
def report_queries() -> tuple[NamedQuery, ...]:
    """The named queries of analysis/sql/report.sql: what the report draws besides the statistics."""
    return _parse("report.sql")


def all_queries() -> tuple[NamedQuery, ...]:
    return (*named_queries(), *report_queries())


def get(name: str) -> NamedQuery:
    for query in all_queries():
        if query.name == name:
            return query
    known = ", ".join(q.name for q in all_queries())
    raise PanSurveyError(f"no named query {name!r} (known: {known})")


def _create_in_dependency_order(con, statements: dict[str, str]) -> None:
    """Create views that may read each other, in any file order (DuckDB binds a view when created)."""
    import duckdb

    pending = dict(statements)
    while pending:
        before = len(pending)
        errors: dict[str, str] = {}
        for name, sql in list(pending.items()):
            try:
                con.execute(f"CREATE VIEW {name} AS {sql}")
                del pending[name]
            except duckdb.CatalogException as exc:
                errors[name] = str(exc)
            except duckdb.Error as exc:
                raise RuntimeError(f"named query {name} is not valid SQL: {exc}") from exc
        if len(pending) == before:
            name, message = next(iter(errors.items()))
            raise RuntimeError(f"named query {name} does not bind: {message}")


def _null_macro(macros: str) -> str:
    """``null_pans_at``: the ``pans_at`` macro of macros.sql (one rule) over ``null_neurons``."""
    start = macros.index("CREATE MACRO pans_at(")
    end = macros.index(";", start)
    block = macros[start : end + 1]
    if block.count("FROM neurons") != 1:
        raise RuntimeError("macros.sql: pans_at must read FROM neurons exactly once")
    return block.replace("pans_at(", "null_pans_at(", 1).replace("FROM neurons", "FROM null_neurons")


def install(con, *, tau: float | None = None, materialize: bool = False) -> None:
    """Create the macros, the helper relations and one view per named query on ``con``."""
    macros = _sql_text("macros.sql")
    con.execute(macros)
    con.execute(_null_macro(macros))
    source = "neurons" if tau is None else f"pans_at({float(tau)!r})"
    con.execute(f"CREATE VIEW neurons_classified AS SELECT * FROM {source}")
    null_source = "null_neurons" if tau is None else f"null_pans_at({float(tau)!r})"
    con.execute(f"CREATE VIEW null_classified AS SELECT * FROM {null_source}")
    kind = "TABLE" if materialize else "VIEW"
    con.execute(f"CREATE {kind} neuron_groups AS {_NEURON_GROUPS}")
    con.execute(f"CREATE {kind} null_groups AS {_NULL_GROUPS}")
    con.execute(f"CREATE {kind} layer_groups AS {_LAYER_GROUPS}")
    con.execute(_shared_sql())
    _create_in_dependency_order(con, {q.name: q.sql for q in all_queries()})
    rows = ", ".join(f"('{q.name}', '{q.about.replace(chr(39), chr(39) * 2)}')" for q in all_queries())
    con.execute(f"CREATE VIEW named_queries AS SELECT * FROM (VALUES {rows}) t(name, about)")
