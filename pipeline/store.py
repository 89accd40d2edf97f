"""The results folder: one sub-folder per table, Parquet files DuckDB reads with a glob.

Layout::

    DIR/neurons/<key>.parquet   DIR/layers/<key>.parquet   DIR/models/<key>.parquet
    DIR/failures/<key>.parquet  DIR/runs/<run_id>.parquet  DIR/impact/<key>.parquet

``<key>`` names one model under one configuration (:func:`file_key`), so a model's rows in
every table come from exactly one file each, and a rerun with the same configuration finds
them (resume). Files are written aside and renamed into place: a reader or a crash never sees
a partial file. A model counts as *done* when its ``models`` file exists; that file is written
last, after its neurons and layers.

``pans compact`` (:mod:`pipeline.compact`) later merges the per-model files of done models into
a few ``compacted-<id>-<n>.parquet`` files per table. Queries read the same glob and see the
same rows; resume still works because :meth:`ResultStore.done_keys` also reads the
``(model_id, config_id)`` pairs listed in the compacted ``models`` files (the done-index).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import PanSurveyError
from pipeline.schema import TABLES

#: Tables a detection writes for each model, in the order they are written (models last).
MODEL_TABLES = ("neurons", "layers", "models")

#: File stem of a compacted file: ``compacted-<12 hex>-<5 digits>``. A :func:`file_key` always
#: ends in ``-<8 hex>-<12 hex>``, so the two kinds of name can never collide.
COMPACTED_RE = re.compile(r"^compacted-[0-9a-f]{12}-\d{5}$")


def is_compacted(path: Path) -> bool:
    """True for a file written by ``pans compact`` (many models), False for a per-model file."""
    return bool(COMPACTED_RE.match(path.stem))


def config_id(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings that change results (not speed knobs like batch size)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def file_key(model_id: str, cfg_id: str) -> str:
    """A filesystem-safe, unique name for (model, configuration)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[-80:]
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return f"{slug}-{digest}-{cfg_id}"


class ResultStore:
    """Reads and writes one results folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def ensure(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise PanSurveyError(f"results path {self.root} exists and is not a folder")
        try:
            for name in TABLES:
                (self.root / name).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PanSurveyError(f"cannot create results folder {self.root}: {exc.strerror}") from exc

    def path(self, table: str, key: str) -> Path:
        return self.root / table / f"{key}.parquet"

    def write(self, table: str, key: str, data: pa.Table) -> Path:
        """Atomically write one Parquet file of ``table`` (cast to its schema)."""
        schema = TABLES[table]
        data = data.select(schema.names).cast(schema) if data.schema != schema else data
        final = self.path(table, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            pq.write_table(data, tmp, compression="zstd")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def write_model(self, tables: dict[str, pa.Table], key: str) -> None:
        """Write a model's neurons, layers and models rows; the models file last marks it done.

        A ``null_neurons`` table (the null twin measured with it) goes first, under the twin's own key
        (:meth:`null_key`), so every model of that architecture finds it.
        """
        if tables.get("null_neurons") is not None:
            row = tables["models"].to_pylist()[0]
            self.write("null_neurons", null_key(row["null_model_id"], row["config_id"]), tables["null_neurons"])
        for table in MODEL_TABLES:
            self.write(table, key, tables[table])
        # A model that succeeds after an earlier failure is no longer failed.
        self.path("failures", key).unlink(missing_ok=True)

    def is_done(self, key: str) -> bool:
        return self.path("models", key).is_file() or key in self.compacted_keys()

    def done_keys(self) -> set[str]:
        """Keys of every finished (model, config): per-model ``models`` files plus the compacted index."""
        folder = self.root / "models"
        if not folder.is_dir():
            return set()
        own = {p.stem for p in folder.glob("*.parquet") if not is_compacted(p)}
        return own | self.compacted_keys()

    def compacted_keys(self) -> set[str]:
        """Keys listed in compacted ``models`` files; cached until that set of files changes."""
        files = sorted(p for p in (self.root / "models").glob("compacted-*.parquet") if is_compacted(p))
        stamp = tuple((p.name, p.stat().st_mtime_ns) for p in files)
        cached = getattr(self, "_compacted_cache", None)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        keys: set[str] = set()
        for p in files:
            ids = pq.read_table(p, columns=["model_id", "config_id"]).to_pydict()
            keys.update(file_key(m, c) for m, c in zip(ids["model_id"], ids["config_id"], strict=True))
        self._compacted_cache = (stamp, keys)
        return keys

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
        """(PANs, padded neurons) of a null twin already in the folder, or None (resume reuses it)."""
        path = self.path("null_neurons", null_key(null_model_id, cfg_id))
        if not path.is_file():
            return None
        t = pq.read_table(path, columns=["is_pan"])
        return sum(bool(v) for v in t.column("is_pan").to_pylist()), t.num_rows

    def read(self, table: str) -> pa.Table:
        """All rows of one table (small folders, tests and summaries; use DuckDB for analysis)."""
        files = sorted((self.root / table).glob("*.parquet"))
        if not files:
            return TABLES[table].empty_table()
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


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
