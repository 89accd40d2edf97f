"""``pans compact DIR``: merge the per-model Parquet files of finished models into a few large ones.

A survey writes one small file per model per table; thousands of them make every query open
thousands of files. Compaction rewrites the ``neurons``, ``layers`` and ``models`` files of
*done* models (their ``models`` file exists), and the ``null_neurons`` files of the null twins
a done model names (one per architecture, shared by its tags), into ``compacted-<id>-<n>.parquet``
files with row groups of ``row_group_rows`` rows, and removes the small ones. Queries read the same glob
(``DIR/<table>/*.parquet``) and get the same rows. ``failures``, ``runs`` and ``impact`` stay
as they are (small, and rewritten in place by later runs).

Resume keeps working: the compacted ``models`` files still list every ``(model_id, config_id)``
and :meth:`pipeline.store.ResultStore.done_keys` reads them (the done-index); a compacted twin is
found by :meth:`pipeline.store.ResultStore.null_counts` and never written a second time.

Crash safety. Compaction holds the folder's writer lock (:mod:`pipeline.folder_lock`), so no
survey, detect or impact writes while it runs (and it does not start while one does). The merged
files are written into a staging folder ``DIR/.compact/<id>/`` and fsynced; then a journal naming
every move and delete is written durably (the commit point); then the moves (renames) and deletes
are applied table by table, ``models`` last, each step's folder fsynced. A crash before the
journal leaves the folder untouched (the staging folder is dropped next time); a crash after it
is rolled forward by the next writer on the folder (``pans compact``, ``survey``, ``detect``,
``impact``, ``verify --repair``). Only during the few milliseconds between a table's renames and
its deletes can a reader see a model's rows twice. Files of unfinished models (an interrupted
run) and twins no done model names are never compacted: a resumed survey rewrites them. Fault-injection points
(:mod:`pipeline.faults`): ``compact:staged``, ``compact:journal``, ``compact:moved:<table>``,
``compact:deleted:<table>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PanSurveyError
from pipeline.faults import fault_point
from pipeline.folder_lock import FolderBusy, writer_lock
from pipeline.schema import TABLES
from pipeline.store import MODEL_TABLES, ResultStore, durable_write, fsync_path, is_compacted, null_key

STAGING = ".compact"
#: Tables compacted, in the order their moves are applied: a twin before the models naming it,
#: the done-marker (``models``) last, as a model is written.
COMPACTED_TABLES = ("null_neurons", *MODEL_TABLES)
DEFAULT_ROW_GROUP_ROWS = 250_000  # within the 100k-1M that keeps DuckDB scans parallel and cheap
DEFAULT_FILE_ROWS = 4_000_000
#: Write-aside files (``.NAME.parquet.XXXX.tmp``) older than this are leftovers of a killed writer.
STALE_TMP_SECONDS = 3600


@dataclass
class TableReport:
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    row_groups: int = 0


@dataclass
class CompactReport:
    root: Path
    recovered: int = 0  # interrupted compactions rolled forward
    models: int = 0  # models whose files were merged
    tables: dict[str, TableReport] = field(default_factory=dict)


def recover(root: str | Path) -> int:
    """Finish (roll forward) committed compactions and drop uncommitted ones; returns how many finished.

    Safe to call at any time: it does nothing when another process holds the folder's writer lock
    (that writer recovers itself), and runs inside a lock this process already holds.
    """
    root = Path(root)
    if not (root / STAGING).is_dir():
        return 0
    try:
        with writer_lock(root, "compact (recovery)"):
            return _recover(root)
    except FolderBusy:
        return 0


def _recover(root: Path) -> int:
    finished = 0
    if not (root / STAGING).is_dir():
        return 0
    for stage in sorted(p for p in (root / STAGING).iterdir() if p.is_dir()):
        journal = stage / "journal.json"
        if journal.is_file():
            _apply(root, json.loads(journal.read_text()))
            finished += 1
        shutil.rmtree(stage, ignore_errors=True)
    return finished


def compact(
    root: str | Path,
    *,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    file_rows: int = DEFAULT_FILE_ROWS,
) -> CompactReport:
    """Merge the per-model files of done models; see the module docstring for the guarantees."""
    root = Path(root).expanduser()
    if not (root / "models").is_dir():
        raise PanSurveyError(f"{root} is not a results folder (no models/ in it)")
    if row_group_rows < 1 or file_rows < row_group_rows:
        raise PanSurveyError("need 1 <= row group rows <= file rows")
    with writer_lock(root, "compact"):
        report = CompactReport(root, recovered=_recover(root))
        _sweep_stale_tmp(root)
        done = sorted(p.stem for p in (root / "models").glob("*.parquet") if not is_compacted(p))
        report.models = len(done)
        if not done:
            return report
        cid = uuid.uuid4().hex[:12]
        stage = root / STAGING / cid
        journal: dict[str, object] = {"id": cid, "tables": {}}
        twins = _named_twins(root, done)
        for table in COMPACTED_TABLES:  # models last: done keys stay visible throughout
            keys = twins if table == "null_neurons" else done
            inputs = [f for k in keys if (f := root / table / f"{k}.parquet").is_file()]
            _check_readable(root, inputs)
            tr = report.tables.setdefault(table, TableReport(files_in=len(inputs)))
            outputs = _merge(inputs, table, stage / table, cid, row_group_rows, file_rows, tr)
            journal["tables"][table] = {  # type: ignore[index]
                "moves": [[str(o.relative_to(root)), f"{table}/{o.name}"] for o in outputs],
                "deletes": [str(f.relative_to(root)) for f in inputs],
            }
        for table in COMPACTED_TABLES:  # the merged files are on disk before the journal points at them
            for staged, _ in journal["tables"][table]["moves"]:  # type: ignore[index]
                fsync_path(root / staged)
            if (stage / table).is_dir():
                fsync_path(stage / table)
        fault_point("compact:staged")
        _write_atomic(stage / "journal.json", json.dumps(journal, indent=1))  # the commit point
        fault_point("compact:journal")
        _apply(root, journal)
        shutil.rmtree(stage, ignore_errors=True)
        return report


def _named_twins(root: Path, done: list[str]) -> list[str]:
    """Keys of the per-twin ``null_neurons`` files named by a done model (own ``models`` files of
    ``done``, or compacted ones) and not yet compacted themselves."""
    models = [root / "models" / f"{k}.parquet" for k in done]
    models += [p for p in sorted((root / "models").glob("compacted-*.parquet")) if is_compacted(p)]
    _check_readable(root, models)
    named: set[str] = set()
    for path in models:
        if "null_model_id" not in pq.read_schema(path).names:  # a folder older than the twin
            continue
        ids = pq.read_table(path, columns=["null_model_id", "config_id"]).to_pydict()
        named.update(null_key(n, c) for n, c in zip(ids["null_model_id"], ids["config_id"], strict=True) if n)
    compacted = ResultStore(root).compacted_index("null_neurons")
    return sorted(k for k in named if k not in compacted and (root / "null_neurons" / f"{k}.parquet").is_file())


def _check_readable(root: Path, files: list[Path]) -> None:
    """A broken input is one line naming it, before anything is merged."""
    for f in files:
        try:
            pq.read_metadata(f)
        except (pa.ArrowException, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PanSurveyError(f"cannot read {f}: {first}; `pans verify {root} --repair` moves it aside") from None


def _merge(
    inputs: list[Path], table: str, out_dir: Path, cid: str, group_rows: int, file_rows: int, report: TableReport
) -> list[Path]:
    """Stream ``inputs`` into files of at most ``file_rows`` rows, in row groups of ``group_rows``."""
    if not inputs:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = pa.unify_schemas([TABLES[table], *(pq.read_schema(f) for f in inputs)], promote_options="permissive")
    outputs: list[Path] = []
    writer: pq.ParquetWriter | None = None
    in_file = 0
    buffer: list[pa.Table] = []
    buffered = 0

    def write_group(group: pa.Table) -> None:
        nonlocal writer, in_file
        if writer is None or in_file + group.num_rows > file_rows:
            if writer is not None:
                writer.close()
            path = out_dir / f"compacted-{cid}-{len(outputs):05d}.parquet"
            outputs.append(path)
            writer = pq.ParquetWriter(path, schema, compression="zstd")
            in_file = 0
        writer.write_table(group, row_group_size=group.num_rows)
        in_file += group.num_rows
        report.row_groups += 1

    for f in inputs:
        part = _conform(pq.read_table(f), schema)
        buffer.append(part)
        buffered += part.num_rows
        report.rows += part.num_rows
        if buffered >= group_rows:
            merged = pa.concat_tables(buffer).combine_chunks()
            start = 0
            while merged.num_rows - start >= group_rows:
                write_group(merged.slice(start, group_rows))
                start += group_rows
            rest = merged.slice(start)
            buffer, buffered = ([rest] if rest.num_rows else []), rest.num_rows
    if buffered or writer is None:  # the last, smaller row group (or an empty table's schema)
        write_group(pa.concat_tables(buffer).combine_chunks() if buffer else schema.empty_table())
    if writer is not None:
        writer.close()
    report.files_out = len(outputs)
    return outputs


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: missing ones (older files) become NULL."""
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _apply(root: Path, journal: dict) -> None:
    """Do the journal's renames then deletes, table by table; idempotent, so a rerun finishes it."""
    for table in COMPACTED_TABLES:
        step = journal["tables"].get(table)
        if not step or not (step["moves"] or step["deletes"]):  # nothing of it (an older folder may lack it)
            continue
        for staged, final in step["moves"]:
            if (root / staged).is_file():
                os.replace(root / staged, root / final)
        fsync_path(root / table)  # the merged rows are durably in place before the small files go
        fault_point(f"compact:moved:{table}")
        for gone in step["deletes"]:
            (root / gone).unlink(missing_ok=True)
        fsync_path(root / table)
        fault_point(f"compact:deleted:{table}")


def _write_atomic(path: Path, text: str) -> None:
    durable_write(path, lambda fh: fh.write(text.encode()))


def _sweep_stale_tmp(root: Path) -> None:
    cutoff = time.time() - STALE_TMP_SECONDS
    for name in TABLES:
        for tmp in (root / name).glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
