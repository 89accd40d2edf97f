"""A results folder as a DuckDB connection: one view per table, plus the macros and named queries.

Why views over ``read_parquet`` rather than loading: a survey folder can hold tens of millions of
neuron rows in hundreds of files, and DuckDB reads only the columns and row groups a query needs.
Every view has at least the columns of pipeline/schema.py (a column missing from all files of an
older folder reads as NULL), plus whatever newer files add (``union_by_name``), so analysis code
and saved queries keep working while the schema grows. A table folder with no files yet is an
empty view with the schema's columns and types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from analysis import named
from analysis.families import family
from pipeline.errors import PanSurveyError, one_line
from pipeline.schema import TABLES

REMOTE_SCHEMES: tuple[str, ...] = (
    "s3://",
    "s3a://",
    "gs://",
    "gcs://",
    "r2://",
    "az://",
    "abfss://",
    "http://",
    "https://",
)


#: Tables small enough to read into memory when materializing (one row per model, layer, failure, run).
SMALL_TABLES: frozenset[str] = frozenset({"models", "layers", "failures", "runs", "impact"})


def duckdb_type(dtype: pa.DataType) -> str:
    """The DuckDB SQL type of an Arrow type used in pipeline/schema.py."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "VARCHAR"
    if pa.types.is_boolean(dtype):
        return "BOOLEAN"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return f"{duckdb_type(dtype.value_type)}[]"
    if pa.types.is_timestamp(dtype):
        return "TIMESTAMPTZ" if dtype.tz else "TIMESTAMP"
    simple = {
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
    }
    if dtype in simple:
        return simple[dtype]
    raise TypeError(f"no DuckDB type for Arrow type {dtype}")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text: str) -> str:
    """``text`` as a SQL string literal (quoted, quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def is_remote(root: str) -> bool:
    return root.lower().startswith(REMOTE_SCHEMES)


@dataclass(frozen=True)
class Folder:
    """Where the tables of a results folder live, local or in an object store."""

    root: str
    remote: bool

    @classmethod
    def of(cls, path: str | Path) -> Folder:
        text = str(path)
        if is_remote(text):
            return cls(root=text.rstrip("/"), remote=True)
        local = Path(text).expanduser()
        if not local.exists():
            raise PanSurveyError(f"results folder {local} does not exist")
        if not local.is_dir():
            raise PanSurveyError(f"results path {local} is not a folder")
        return cls(root=str(local.resolve()), remote=False)

    def pattern(self, table: str) -> str:
        return f"{self.root}/{table}/*.parquet"

    def has_files(self, con, table: str) -> bool:
        if not self.remote:
            return any((Path(self.root) / table).glob("*.parquet"))
        rows = con.execute("SELECT count(*) FROM glob(?)", [self.pattern(table)]).fetchall()
        return rows[0][0] > 0


def _load_remote_support(con, root: str) -> None:
    try:
        con.execute("LOAD httpfs")
    except Exception as exc:  # duckdb raises several kinds here (IO, HTTP, catalog)
        try:
            con.execute("INSTALL httpfs")
            con.execute("LOAD httpfs")
        except Exception:
            first = one_line(exc, 2000, first_line_only=True)
            raise PanSurveyError(
                f"reading {root} needs DuckDB's httpfs extension, which could not be loaded ({first}); "
                "install it with: python -c \"import duckdb; duckdb.connect().install_extension('httpfs')\""
            ) from None


def _uniform_schema(con, pattern: str) -> bool:
    """True when every file of a table has the same columns in the same order with the same types.

    Then DuckDB needs only the first file's footer to bind a query; with ``union_by_name`` it reads
    every footer on every bind, which costs seconds on a folder of hundreds of per-model files.
    """
    rows = con.execute(
        """SELECT count(DISTINCT sig) FROM (
               SELECT file_name, string_agg(concat_ws(':', name, type, repetition_type, logical_type, duckdb_type),
                                            ',' ORDER BY column_id NULLS FIRST) AS sig
               FROM parquet_schema(?) GROUP BY file_name)""",
        [pattern],
    ).fetchall()
    return rows[0][0] <= 1


def _table_view_sql(con, folder: Folder, table: str) -> tuple[str, list[str]]:
    """SELECT for one table's view (the files' columns, plus NULL for schema columns they lack) and its columns."""
    schema = TABLES[table]
    if not folder.has_files(con, table):
        cols = ", ".join(f"NULL::{duckdb_type(f.type)} AS {_quote_ident(f.name)}" for f in schema)
        return f"SELECT {cols} WHERE false", list(schema.names)
    pattern = folder.pattern(table)
    try:
        union = "" if _uniform_schema(con, pattern) else ", union_by_name = true"
        if union:
            _refuse_foreign(con, folder, table, pattern)
        # can_have_nan: writers (pyarrow) leave NaN out of min/max statistics; without it DuckDB folds
        # isnan(x) to false from those statistics and NaN sides would count as huge z-scores.
        source = f"read_parquet({sql_literal(pattern)}{union}, can_have_nan = true)"
        present = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    except Exception as exc:  # duckdb.Error subclasses: unreadable or corrupt files
        first = one_line(exc, 2000, first_line_only=True)
        raise PanSurveyError(f"cannot read the {table} table of {folder.root}: {first}") from None
    have = set(present)
    cols = [
        _quote_ident(f.name) if f.name in have else f"NULL::{duckdb_type(f.type)} AS {_quote_ident(f.name)}"
        for f in schema
    ]
    newer = [name for name in present if name not in schema.names]
    cols += [_quote_ident(name) for name in newer]
    return f"SELECT {', '.join(cols)} FROM {source}", [*schema.names, *newer]


#: The column every file of a table has (a file without it was not written by pans).
def _key_column(table: str) -> str:
    return "run_id" if table == "runs" else "model_id"


def _refuse_foreign(con, folder: Folder, table: str, pattern: str) -> None:
    """A Parquet file that is not one of ours (no key column) would read as rows of NULLs: name it."""
    rows = con.execute(
        "SELECT file_name FROM parquet_schema(?) GROUP BY file_name HAVING NOT bool_or(name = ?) ORDER BY 1 LIMIT 1",
        [pattern, _key_column(table)],
    ).fetchall()
    if rows:
        raise PanSurveyError(
            f"{rows[0][0]} is not a {table} file (no {_key_column(table)} column); "
            f"`pans verify {folder.root} --repair` moves it aside"
        )


def check_local_folder(folder: Folder) -> None:
    """A local folder must be a results folder whose files are all whole Parquet files.

    Truncated and non-Parquet files are found by their magic bytes (two tiny reads per file, so a
    folder of thousands of files costs milliseconds) and named in one line, instead of DuckDB
    failing half-way through a query or a report.
    """
    from pipeline.store import is_results_folder

    root = Path(folder.root)
    if not is_results_folder(root):
        raise PanSurveyError(f"{root} is not a results folder (no models/ or runs/ in it)")
    for table in TABLES:
        for path in sorted((root / table).glob("*.parquet")) if (root / table).is_dir() else []:
            if not _whole_parquet(path):
                raise PanSurveyError(
                    f"{path} is not a readable Parquet file (truncated, or another format); "
                    f"`pans verify {root} --repair` moves it aside"
                )


def _whole_parquet(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            size = fh.seek(0, 2)
            if size < 12:
                return False
            fh.seek(size - 4)
            return head == b"PAR1" and fh.read(4) == b"PAR1"
    except OSError:
        return False


def _register_functions(con) -> None:
    con.create_function("pan_family", family, ["VARCHAR"], "VARCHAR", null_handling="special", side_effects=False)


def _lock_down(con, folder: Folder) -> None:
    """No file access beyond the results folder, and no way to turn that back on from SQL."""
    con.execute(f"SET allowed_directories = [{sql_literal(folder.root + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET lock_configuration = true")


def open_results(
    path: str | Path,
    *,
    tau: float | None = None,
    materialize: bool = False,
    lockdown: bool = False,
):
    """Open a results folder as an in-memory DuckDB connection with its views, macros and named queries.

    ``tau``: re-classify PANs at this threshold (from the stored own_z) for every named query;
    None uses the classification stored by the detector.
    ``materialize``: read the small tables (all but neurons) into memory once, and aggregate the
    neurons once into a small table the named queries share: one scan of the files instead of one
    per query (what ``pans stats`` and the report use). The big ``neurons`` stays a view.
    ``lockdown``: SQL may read only this folder and cannot change settings (``pans query``).
    """
    import duckdb

    if tau is not None and not tau > 0:
        raise PanSurveyError(f"tau must be a positive number, got {tau}")
    folder = Folder.of(path)
    if not folder.remote:
        check_local_folder(folder)
    con = duckdb.connect(":memory:")
    # Every view binds (and every query scans) the same footers: read each once.
    con.execute("SET parquet_metadata_cache = true")
    if folder.remote:
        _load_remote_support(con, folder.root)
    _register_functions(con)
    for table in TABLES:
        view_sql, columns = _table_view_sql(con, folder, table)
        if table == "models" and "family" not in columns:  # derived once here, so every query agrees
            view_sql = f"SELECT *, pan_family(coalesce(architecture, model_id)) AS family FROM ({view_sql})"
        kind = "TABLE" if materialize and table in SMALL_TABLES else "VIEW"
        con.execute(f"CREATE {kind} {table} AS {view_sql}")
    named.install(con, tau=tau, materialize=materialize)
    if lockdown:
        _lock_down(con, folder)
    return con
