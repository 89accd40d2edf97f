"""The results folder: one sub-folder per table, Parquet files DuckDB reads with a glob.

Layout::

    DIR/neurons/<key>.parquet   DIR/layers/<key>.parquet   DIR/models/<key>.parquet
    DIR/failures/<key>.parquet  DIR/runs/<run_id>.parquet  DIR/impact/<key>.parquet

``<key>`` names one model under one configuration (:func:`file_key`), so a model's rows in
every table come from exactly one file each, and a rerun with the same configuration finds
them (resume).

This module is the one owner of three questions every writer and reader asks:

* **done?** A model is done when its done-marker (its ``models`` row) exists, in its own file
  or in a compacted file (:meth:`ResultStore.is_done`). Impact results are done when their
  ``impact`` file exists (:meth:`ResultStore.impact_done`).
* **write.** :meth:`ResultStore.write_model` and :meth:`ResultStore.write_impact` write a set
  of tables in one fixed order whose last file is the done-marker (:data:`MODEL_TABLES`,
  :func:`impact_tables`: a new table is one registered experiment's ``tables``). Writing a model
  that is already done is skipped (never a second copy); rewriting impact results first
  removes their marker. Every file is written aside, fsynced, renamed into place, and its
  folder fsynced (:func:`durable_write`), so after a crash or a power cut a file either is
  complete or is not there, and a done-marker never points at missing rows.
* **read back.** :meth:`ResultStore.read_back` returns one model's rows of a table whether
  they sit in its own file or in a compacted one (``pans impact`` reuses a detection).

``pans compact`` (:mod:`pipeline.compact`) later merges the per-model files of done models into
a few ``compacted-<id>-<n>.parquet`` files per table. Queries read the same glob and see the
same rows; resume still works because :meth:`ResultStore.done_keys` also reads the
``(model_id, config_id)`` pairs listed in the compacted ``models`` files (the done-index).

Every writer holds the folder's writer lock (:meth:`ResultStore.lock`, :mod:`pipeline.folder_lock`).
Fault-injection points (:mod:`pipeline.faults`) sit between every two files written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PanSurveyError
from pipeline.faults import fault_point
from pipeline.schema import TABLES

#: Tables a detection writes for each model, in the order they are written: the done-marker last.
MODEL_TABLES = ("neurons", "layers", "models")
#: Tables of a model's impact experiments, in the order they are written: the impact marker last.


def impact_tables() -> tuple[str, ...]:
    """The tables an impact run writes, marker (``impact``) last: those its registered experiments declare."""
    from pipeline.impact.registry import output_tables

    return output_tables()


DONE_MARKER = MODEL_TABLES[-1]
IMPACT_MARKER = "impact"

#: Where ``pans verify --repair`` moves what breaks the folder's invariants (never deleted).
QUARANTINE = "quarantine"

#: File stem of a compacted file: ``compacted-<12 hex>-<5 digits>``. A :func:`file_key` always
#: ends in ``-<8 hex>-<12 hex>``, so the two kinds of name can never collide.
COMPACTED_RE = re.compile(r"^compacted-[0-9a-f]{12}-\d{5}$")


def is_compacted(path: Path) -> bool:
    """True for a file written by ``pans compact`` (many models), False for a per-model file."""
    return bool(COMPACTED_RE.match(path.stem))


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def file_key(model_id: str, cfg_id: str) -> str:
    """A filesystem-safe, unique name for (model, configuration)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[-80:]
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return f"{slug}-{digest}-{cfg_id}"


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (a rename or unlink in it), to disk (POSIX: both are data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(final: Path, write: Any, *, point: str = "") -> Path:
    """Write ``final`` through ``write(file_object)``: aside, fsync, rename, fsync the folder.

    A crash at any moment leaves either the old file, or the complete new one: never a partial or
    (after a power cut) an empty file under the final name. ``point`` names the fault-injection
    point fired between the fsync and the rename.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if point:
            fault_point(point)
        os.replace(tmp, final)
        fsync_path(final.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def durable_unlink(path: Path) -> None:
    """Remove ``path`` (if there) and make the removal durable before anything that depends on it."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_path(path.parent)


def is_results_folder(root: str | Path) -> bool:
    """A folder some pans command wrote: it has ``models/`` or ``runs/``."""
    root = Path(root).expanduser()
    return (root / "models").is_dir() or (root / "runs").is_dir()


class ResultStore:
    """Reads and writes one results folder (see the module docstring: done, write, read back)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self._compacted_cache: dict[str, tuple[tuple, dict[str, tuple[str, str]]]] = {}  # table -> (stamp, index)

    def ensure(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise PanSurveyError(f"results path {self.root} exists and is not a folder")
        try:
            for name in TABLES:
                (self.root / name).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PanSurveyError(f"cannot create results folder {self.root}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def writing(self, command: str) -> Iterator[ResultStore]:
        """The one way in for every writer: create the folder, hold its writer lock, finish an
        interrupted compaction, and turn a failed write (full disk, ...) into a one-line error.

        A second writer on the folder stops here at once, naming the holder (pipeline/folder_lock.py).
        Nothing already written is lost when a write fails: every file went in whole or not at all.
        """
        from pipeline.compact import recover
        from pipeline.folder_lock import writer_lock

        self.ensure()
        with writer_lock(self.root, command):
            recover(self.root)
            try:
                yield self
            except OSError as exc:
                why = exc.strerror or str(exc)
                raise PanSurveyError(
                    f"cannot write results to {self.root}: {why}; what was written is kept, rerun to finish"
                ) from exc

    def check_not_busy(self) -> None:
        """Fail at once when another process writes this folder (before slow work that would be lost)."""
        from pipeline.folder_lock import FolderBusy, describe, holder, is_locked_by_other

        if is_locked_by_other(self.root):
            raise FolderBusy(f"{self.root} is being written by {describe(holder(self.root))}; "
                             "wait for it to finish (one writer per results folder)")

    def path(self, table: str, key: str) -> Path:
        return self.root / table / f"{key}.parquet"

    # -- write ---------------------------------------------------------------------------------

    def write(self, table: str, key: str, data: pa.Table) -> Path:
        """Durably and atomically write one Parquet file of ``table`` (cast to its schema)."""
        schema = TABLES[table]
        data = data.select(schema.names).cast(schema) if data.schema != schema else data
        fault_point(f"write:{table}")
        return durable_write(
            self.path(table, key), lambda fh: pq.write_table(data, fh, compression="zstd"), point=f"rename:{table}"
        )

    def _write_set(self, tables: dict[str, pa.Table], key: str, order: tuple[str, ...]) -> None:
        """Write ``order``'s tables (those given), the last one (the marker) last; unmark first."""
        marker = order[-1]
        if marker not in tables:
            raise ValueError(f"no {marker} table to mark {key} done")
        durable_unlink(self.path(marker, key))  # a crash part-way leaves it not done, never half-replaced
        for table in order:
            if table in tables:
                self.write(table, key, tables[table])
        fault_point("write:done")
        # A model that succeeds after an earlier failure is no longer failed.
        self.clear_failure(key)

    def write_model(self, tables: dict[str, pa.Table], key: str) -> bool:
        """Write a model's detection tables, done-marker last; False (nothing written) when it is done.

        A done model is never written twice: not beside its own files, not beside compacted rows.
        A ``null_neurons`` table (the null twin measured with it) goes first, under :func:`null_key`.
        """
        if self.is_done(key):
            return False
        twin = tables.get("null_neurons")
        if twin is not None:  # under the twin's own key, so every tag of the architecture finds it
            row = tables["models"].to_pylist()[0]
            nkey = null_key(row["null_model_id"], row["config_id"])
            if nkey not in self.compacted_index("null_neurons"):  # a compacted twin is kept, never a second copy
                self.write("null_neurons", nkey, twin)
        self._write_set({k: v for k, v in tables.items() if k != "null_neurons"}, key, MODEL_TABLES)
        return True

    def write_impact(self, tables: dict[str, pa.Table], key: str) -> None:
        """Write (or replace) a model's impact tables under its impact key, the ``impact`` file last."""
        self._write_set(tables, key, impact_tables())

    def clear_failure(self, key: str) -> None:
        durable_unlink(self.path("failures", key))

    # -- done ----------------------------------------------------------------------------------

    def is_done(self, key: str) -> bool:
        return self.path(DONE_MARKER, key).is_file() or key in self.compacted_keys()

    def impact_done(self, key: str) -> bool:
        return self.path(IMPACT_MARKER, key).is_file()

    def done_keys(self) -> set[str]:
        """Keys of every finished (model, config): per-model ``models`` files plus the compacted index."""
        folder = self.root / DONE_MARKER
        if not folder.is_dir():
            return set()
        own = {p.stem for p in folder.glob("*.parquet") if not is_compacted(p)}
        return own | self.compacted_keys()

    def compacted_keys(self) -> set[str]:
        return set(self.compacted_index())

    def compacted_index(self, table: str = DONE_MARKER) -> dict[str, tuple[str, str]]:
        """key -> (model_id, config_id) of the rows in ``table``'s compacted files (``models``: the
        done-index; ``null_neurons``: the compacted twins, keyed by :func:`null_key`); cached until those change."""
        folder = self.root / table
        files = sorted(p for p in folder.glob("compacted-*.parquet") if is_compacted(p)) if folder.is_dir() else []
        stamp = tuple((p.name, p.stat().st_mtime_ns) for p in files)
        cached = self._compacted_cache.get(table)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        index: dict[str, tuple[str, str]] = {}
        for p in files:
            try:
                pairs = pq.read_table(p, columns=["model_id", "config_id"]).group_by(["model_id", "config_id"])
                ids = pairs.aggregate([]).to_pydict()
            except (pa.ArrowException, OSError) as exc:
                raise PanSurveyError(f"cannot read {p}: {_first_line(exc)} (pans verify {self.root} --repair "
                                     "moves it aside)") from None
            for m, c in zip(ids["model_id"], ids["config_id"], strict=True):
                index[file_key(m, c)] = (m, c)
        self._compacted_cache[table] = (stamp, index)
        return index

    # -- read back -----------------------------------------------------------------------------

    def read_back(self, table: str, key: str) -> pa.Table | None:
        """One done model's rows of ``table``, from its own file or from the compacted files; None if not done."""
        own = self.path(table, key)
        if self.path(DONE_MARKER, key).is_file():
            return pq.read_table(own) if own.is_file() else TABLES[table].empty_table()
        ids = self.compacted_index().get(key)
        if ids is None:
            return None
        return self._compacted_rows(table, *ids)

    def _compacted_rows(self, table: str, model_id: str, cfg: str) -> pa.Table:
        """The rows of (``model_id``, ``cfg``) in ``table``'s compacted files."""
        parts = [
            pq.read_table(p, filters=[("model_id", "=", model_id), ("config_id", "=", cfg)])
            for p in sorted((self.root / table).glob("compacted-*.parquet"))
            if is_compacted(p)
        ]
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return TABLES[table].empty_table()
        return pa.concat_tables(parts, promote_options="default")

    def write_failure(
        self,
        key: str,
        *,
        model_id: str,
        config_id: str,
        run_id: str | None,
        stage: str,
        error_type: str,
        message: str,
        attempt: int = 1,
    ) -> Path:
        """Record why a model has no results (the latest failure of that (model, config) wins)."""
        import datetime as dt

        from pipeline.schema import table_from_rows

        row = {
            "model_id": model_id,
            "config_id": config_id,
            "run_id": run_id,
            "stage": stage,
            "error_type": error_type,
            "message": message,
            "attempt": attempt,
            "created_at": dt.datetime.now(dt.UTC),
        }
        return self.write("failures", key, table_from_rows("failures", [row]))

    def null_counts(self, null_model_id: str, cfg_id: str) -> tuple[int, int] | None:
        """(PANs, padded neurons) of a null twin already in the folder, in its own file or a compacted
        one, or None (resume and ``pans detect`` reuse it; an unreadable own file: measured again)."""
        key = null_key(null_model_id, cfg_id)
        path = self.path("null_neurons", key)
        if path.is_file():
            try:
                t = pq.read_table(path, columns=["is_pan"])
            except (pa.ArrowException, OSError):
                return None
        elif key in self.compacted_index("null_neurons"):
            t = self._compacted_rows("null_neurons", null_model_id, cfg_id)
        else:
            return None
        return sum(bool(v) for v in t.column("is_pan").to_pylist()), t.num_rows

    def null_model_ids(self, cfg_id: str) -> set[str]:
        """Ids of the null twins the folder holds under one configuration (own files and compacted)."""
        folder = self.root / "null_neurons"
        ids = {m for m, c in self.compacted_index("null_neurons").values() if c == cfg_id}
        for p in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
            if not is_compacted(p) and p.stem.endswith(f"-{cfg_id}"):
                with contextlib.suppress(pa.ArrowException, OSError):  # a broken file: the twin is measured again
                    column = pq.read_table(p, columns=["model_id"]).column("model_id")
                    ids.update(m for m in column.unique().to_pylist() if m is not None)
        return ids

    def read(self, table: str) -> pa.Table:
        """All rows of one table (small folders, tests and summaries; use DuckDB for analysis)."""
        files = sorted((self.root / table).glob("*.parquet"))
        if not files:
            return TABLES[table].empty_table()
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")

    def totals(self, cfg_id: str) -> tuple[int, int]:
        """Models and PANs in the whole folder under one configuration (every run's)."""
        import pyarrow.compute as pc

        models = self.read("models")
        models = models.filter(pc.equal(models["config_id"], cfg_id))
        return models.num_rows, int(pc.sum(models["pans"]).as_py() or 0)


def null_key(null_model_id: str, cfg_id: str) -> str:
    """File key of a null twin's rows in ``null_neurons`` (one per architecture, input size, config)."""
    return file_key(null_model_id, cfg_id)


def run_config(settings: Any, **parts: Any) -> dict[str, Any]:
    """A run's ``config_json``, one shape for every command: the detection settings as given
    (``settings``) and as they determine the numbers (``result_settings``, with the detector
    version), the command line, and the command's own parts (``survey`` options, ``impact``, ...).
    """
    import sys

    return {
        "settings": settings.to_dict(),
        "result_settings": settings.result_settings(),
        "argv": list(sys.argv),
        **parts,
    }


def run_record(run_id: str, cfg_id: str, command: str, specs: list[str], config: dict[str, Any]) -> pa.Table:
    """The ``runs`` row: every setting a run used, so each number traces back to its settings."""
    import datetime as dt

    from pipeline.schema import table_from_rows
    from pipeline.version import git_revision, library_versions_json

    row = {
        "run_id": run_id,
        "config_id": cfg_id,
        "command": command,
        "specs": list(specs),
        "config_json": json.dumps(config, sort_keys=True, default=str),
        "versions": library_versions_json(),
        "git_revision": git_revision(),
        "started_at": dt.datetime.now(dt.UTC),
    }
    return table_from_rows("runs", [row])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
