"""Read-only SQL for ``pans query``: one SELECT (or EXPLAIN), nothing that writes or reconfigures.

This is the first of two locks. The second is the connection itself (``lockdown=True``): file
access limited to the results folder, and the configuration locked so SQL cannot lift that.
The first matters because the folder must stay writable for the survey: a ``COPY ... TO`` into
it would pass the second lock, so statements are checked by kind before anything runs.
"""

from __future__ import annotations

from pipeline.errors import PanSurveyError, one_line

#: Statement kinds that only read (DuckDB's parser reports DESCRIBE, SHOW, SUMMARIZE, FROM-first
#: queries and VALUES as SELECT).
ALLOWED_KINDS: frozenset[str] = frozenset({"SELECT", "EXPLAIN"})

_WHAT = {
    "COPY": "COPY writes files",
    "EXPORT": "EXPORT writes files",
    "INSERT": "INSERT modifies tables",
    "UPDATE": "UPDATE modifies tables",
    "DELETE": "DELETE modifies tables",
    "CREATE": "CREATE defines new objects",
    "DROP": "DROP removes objects",
    "ALTER": "ALTER changes objects",
    "ATTACH": "ATTACH opens other databases",
    "DETACH": "DETACH closes databases",
    "SET": "SET changes settings",
    "LOAD": "INSTALL/LOAD adds extensions",
    "PRAGMA": "PRAGMA changes settings",
    "CALL": "CALL runs procedures",
    "MULTI": "this statement (e.g. PIVOT) runs several statements; wrap it as SELECT * FROM (PIVOT ...)",
}


def statement_kinds(con, sql: str) -> list[str]:
    """The kind of each statement in ``sql`` (SELECT, COPY, ...), from DuckDB's own parser."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise PanSurveyError(f"SQL does not parse: {one_line(exc, 2000, first_line_only=True)}") from None
    return [statement.type.name for statement in statements]


def check_read_only(con, sql: str) -> None:
    """Raise a one-line PanSurveyError unless ``sql`` is exactly one read-only statement."""
    kinds = statement_kinds(con, sql)
    if not kinds:
        raise PanSurveyError("no SQL statement given")
    if len(kinds) > 1:
        raise PanSurveyError(f"give one SQL statement at a time (got {len(kinds)})")
    kind = kinds[0]
    if kind not in ALLOWED_KINDS:
        why = _WHAT.get(kind, f"{kind} statements are not queries")
        raise PanSurveyError(f"results are read-only: only SELECT queries run here ({why})")
