"""``pans verify DIR``: check a results folder's invariants; ``--repair`` quarantines what breaks them.

The invariants (each model exactly once, whatever happened to the folder):

* every Parquet file of every table is readable and is one of ours (has the table's key columns);
* each (model, config) is done at most once: one ``models`` row, and its rows of every other
  table come from one write (its own file, or one compaction);
* a done model's ``neurons`` rows number its ``padded_neurons``, its ``layers`` rows its ``conv_layers``;
* a done model that names a null twin (``null_model_id``, with ``null_padded_neurons``) finds the
  twin's rows in ``null_neurons``, written once, numbering its ``null_padded_neurons``;
* no orphan rows: no neurons or layers of a model that is not done, no twin that no done model
  names, no impact rows of a model that is not done, no ``impact_classes``/``impact_border`` file
  without its ``impact`` marker.

``--repair`` moves what breaks them into ``DIR/quarantine/<stamp>/<table>/`` (never deletes):
whole files when all their rows are bad, otherwise the original file goes to quarantine and a
copy without the bad rows takes its place. A model whose rows were taken out is no longer done,
so the next run of the same command redoes it. A twin that is missing or miscounted is taken out
with every model that names it (the rerun measures it again, once); a twin is taken out with the
last model naming it. Reads only pyarrow: no torch, no Ray.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import PanSurveyError
from pipeline.schema import TABLES
from pipeline.store import (
    IMPACT_MARKER,
    MODEL_TABLES,
    QUARANTINE,
    durable_write,
    fsync_path,
    impact_tables,
    is_compacted,
    is_results_folder,
)

#: Columns that identify whose rows a file holds, per table.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    **{t: ("model_id", "config_id") for t in TABLES},
    "runs": ("run_id", "config_id"),
    **{t: ("model_id", "config_id", "impact_id") for t in impact_tables()},
}


@dataclass
class Problem:
    kind: str  # unreadable | foreign | duplicate | count | orphan
    table: str
    message: str


@dataclass
class TableStats:
    files: int = 0
    rows: int = 0


@dataclass
class VerifyReport:
    root: Path
    tables: dict[str, TableStats] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)  # with --repair: what went to quarantine
    #: What a repair takes out: whole files, and rows (by key) of files that keep others.
    whole: dict[Path, str] = field(default_factory=dict)
    rows: dict[Path, set[tuple]] = field(default_factory=lambda: defaultdict(set))

    @property
    def ok(self) -> bool:
        return not self.problems


def _group(path: Path) -> str:
    """One write of a model's rows: its own file (the stem), or one compaction (its id)."""
    return "compacted-" + path.stem.split("-")[1] if is_compacted(path) else "own:" + path.stem


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read(report: VerifyReport, table: str, path: Path, columns: list[str]) -> pa.Table | None:
    """The file's key columns (+ ``columns``), or None after recording why it is unusable."""
    rel = path.relative_to(report.root)
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        report.problems.append(Problem("unreadable", table, f"{rel}: {_first_line(exc)}"))
        report.whole[path] = "unreadable"
        return None
    missing = [c for c in KEY_COLUMNS[table] if c not in names]
    if missing:
        report.problems.append(Problem("foreign", table, f"{rel}: not a {table} file (no {', '.join(missing)})"))
        report.whole[path] = "foreign"
        return None
    try:
        return pq.read_table(path, columns=[*KEY_COLUMNS[table], *(c for c in columns if c in names)])
    except (pa.ArrowException, OSError) as exc:
        report.problems.append(Problem("unreadable", table, f"{rel}: {_first_line(exc)}"))
        report.whole[path] = "unreadable"
        return None


def verify(root: str | Path) -> VerifyReport:
    """Check every invariant; the report lists each problem and what a repair would move."""
    root = Path(root).expanduser()
    if not root.is_dir() or not is_results_folder(root):
        raise PanSurveyError(f"{root} is not a results folder (no models/ or runs/ in it)")
    report = VerifyReport(root)
    extra = {"models": ["padded_neurons", "conv_layers", "null_model_id", "null_padded_neurons"]}
    # key -> group -> [(file, rows)]
    where: dict[str, dict[tuple, dict[str, list[tuple[Path, int]]]]] = {}
    counts: dict[tuple, tuple[int, int]] = {}
    twins: dict[tuple, dict[tuple, int | None]] = defaultdict(dict)  # (twin, config) -> model -> null_padded
    for table in TABLES:
        stats = report.tables.setdefault(table, TableStats())
        index: dict[tuple, dict[str, list[tuple[Path, int]]]] = defaultdict(lambda: defaultdict(list))
        for path in sorted((root / table).glob("*.parquet")) if (root / table).is_dir() else []:
            stats.files += 1
            data = _read(report, table, path, extra.get(table, []))
            if data is None:
                continue
            stats.rows += data.num_rows
            if table in ("runs", "failures"):
                continue
            keys = KEY_COLUMNS[table]
            grouped = data.group_by(list(keys)).aggregate([([], "count_all")])
            for row in grouped.to_pylist():
                index[tuple(row[k] for k in keys)][_group(path)].append((path, row["count_all"]))
            if table == "models":
                for row in data.to_pylist():
                    counts[(row["model_id"], row["config_id"])] = (
                        int(row.get("padded_neurons") or 0),
                        int(row.get("conv_layers") or 0),
                    )
                    if row.get("null_model_id") is not None:
                        twin = (row["null_model_id"], row["config_id"])
                        twins[twin][(row["model_id"], row["config_id"])] = row.get("null_padded_neurons")
        where[table] = index
        for tmp in (root / table).glob(".*.tmp") if (root / table).is_dir() else []:
            report.notes.append(f"{tmp.relative_to(root)}: left by an interrupted write (ignored by every reader)")

    _check_models(report, where, counts)
    _check_twins(report, where, twins)
    _check_impact(report, where)
    _check_unmarked_files(report)
    if (root / ".compact").is_dir() and any(p.is_dir() for p in (root / ".compact").iterdir()):
        report.notes.append(".compact/: an interrupted compaction; the next writer (or --repair) finishes it")
    return report


def _take(report: VerifyReport, table: str, key: tuple, groups: dict[str, list[tuple[Path, int]]]) -> None:
    for files in groups.values():
        for path, _ in files:
            report.rows[path].add(key)


def _check_models(report: VerifyReport, where: dict, counts: dict[tuple, tuple[int, int]]) -> None:
    models = where["models"]
    done: dict[tuple, str] = {}  # pair -> the group kept
    for pair, groups in models.items():
        total = sum(n for files in groups.values() for _, n in files)
        keep = sorted(groups, key=lambda g: (not g.startswith("compacted-"), g))[0]
        done[pair] = keep
        if total > 1:
            report.problems.append(Problem("duplicate", "models", f"{_name(pair)} is done {total} times "
                                           f"({', '.join(sorted(groups))})"))
            for group, files in groups.items():
                if group != keep:
                    _take(report, "models", pair, {group: files})
            if len(groups[keep]) == 1 and groups[keep][0][1] > 1:  # twice inside one file: nothing sane to keep
                _take(report, "models", pair, {keep: groups[keep]})
    for table in MODEL_TABLES:
        if table == "models":
            continue
        for pair, groups in where[table].items():
            if pair not in done:
                report.problems.append(Problem("orphan", table, f"{_name(pair)}: rows of a model that is not done"))
                _take(report, table, pair, groups)
                continue
            others = {g: f for g, f in groups.items() if g != done[pair]}
            if others:
                report.problems.append(Problem("duplicate", table, f"{_name(pair)}: rows from {len(groups)} writes "
                                               f"({', '.join(sorted(groups))})"))
                _take(report, table, pair, others)
    for pair, keep in done.items():
        padded, layers = counts.get(pair, (0, 0))
        got = {t: sum(n for _, n in where[t].get(pair, {}).get(keep, [])) for t in ("neurons", "layers")}
        if got["neurons"] != padded or got["layers"] != layers:
            report.problems.append(Problem(
                "count", "neurons", f"{_name(pair)}: {got['neurons']} neuron rows for padded_neurons {padded}, "
                f"{got['layers']} layer rows for conv_layers {layers} (a repair takes the model out: rerun redoes it)"))
            for table in MODEL_TABLES:
                _take(report, table, pair, where[table].get(pair, {}))


def _taken_out(report: VerifyReport, key: tuple, groups: dict[str, list[tuple[Path, int]]]) -> bool:
    """Every row of ``key`` in ``groups`` goes with a repair (whole files, or rows already marked)."""
    return all(path in report.whole or key in report.rows.get(path, ()) for files in groups.values()
               for path, _ in files)


def _check_twins(report: VerifyReport, where: dict, twins: dict[tuple, dict[tuple, int | None]]) -> None:
    """Each named null twin once in ``null_neurons``, its rows numbering ``null_padded_neurons``; no orphan twins."""
    rows = where["null_neurons"]
    staying = {twin: {m: n for m, n in models.items() if not _taken_out(report, m, where["models"].get(m, {}))}
               for twin, models in twins.items()}
    kept: dict[tuple, str] = {}
    for twin, groups in rows.items():
        if not staying.get(twin):
            if not twins.get(twin):  # named by no model at all; else it goes with the last model naming it
                files = ", ".join(sorted(str(p.relative_to(report.root)) for fs in groups.values() for p, _ in fs))
                report.problems.append(Problem("orphan", "null_neurons", f"twin {_name(twin)}: no model row names "
                                               f"it ({files}; an interrupted write)"))
            _take(report, "null_neurons", twin, groups)
            continue
        keep = kept[twin] = sorted(groups, key=lambda g: (not g.startswith("compacted-"), g))[0]
        others = {g: f for g, f in groups.items() if g != keep}
        if others:
            report.problems.append(Problem("duplicate", "null_neurons", f"twin {_name(twin)}: rows from "
                                           f"{len(groups)} writes ({', '.join(sorted(groups))})"))
            _take(report, "null_neurons", twin, others)
    for twin, models in sorted(staying.items(), key=str):
        got = sum(n for _, n in rows.get(twin, {}).get(kept.get(twin, ""), []))
        wrong = sorted((m, padded) for m, padded in models.items() if padded is not None and padded != got)
        if not wrong:
            continue
        (model, padded), more = wrong[0], len(wrong) - 1
        report.problems.append(Problem(
            "count", "null_neurons", f"{_name(model)}{f' and {more} more' if more else ''}: {got} rows of twin "
            f"{twin[0]} for null_padded_neurons {padded} (a repair takes the twin out with the {len(models)} "
            "model(s) naming it: rerun redoes them)"))
        _take(report, "null_neurons", twin, rows.get(twin, {}))
        for pair in models:
            for table in MODEL_TABLES:
                _take(report, table, pair, where[table].get(pair, {}))


def _check_impact(report: VerifyReport, where: dict) -> None:
    done = {pair for pair in where["models"]}
    marked = {key for key in where[IMPACT_MARKER]}
    for table in impact_tables():
        for key, groups in where[table].items():
            pair = key[:2]
            if pair not in done:
                report.problems.append(Problem("orphan", table, f"{_name(pair)} (impact {key[2]}): impact rows of "
                                               "a model that is not done"))
                _take(report, table, key, groups)
            elif key not in marked:
                report.problems.append(Problem("orphan", table, f"{_name(pair)} (impact {key[2]}): rows without "
                                               "their impact marker (an interrupted write)"))
                _take(report, table, key, groups)
            elif len(groups) > 1:
                report.problems.append(Problem("duplicate", table, f"{_name(pair)} (impact {key[2]}): rows from "
                                               f"{len(groups)} files"))
                keep = sorted(groups)[0]
                _take(report, table, key, {g: f for g, f in groups.items() if g != keep})


def _unmarked(report: VerifyReport, tables: tuple[str, ...]) -> None:
    """Per-model files without their own marker file (found even when they hold no rows)."""
    marker = tables[-1]
    for table in tables[:-1]:
        folder = report.root / table
        for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
            if is_compacted(path) or path in report.whole or (report.root / marker / path.name).is_file():
                continue
            if path not in report.rows:  # rows already reported (orphan or duplicate): one line is enough
                report.problems.append(Problem("orphan", table, f"{path.relative_to(report.root)}: no "
                                               f"{marker}/{path.name} beside it (an interrupted or second write)"))
            report.whole[path] = "orphan"


def _check_unmarked_files(report: VerifyReport) -> None:
    _unmarked(report, MODEL_TABLES)
    _unmarked(report, impact_tables())


def _name(pair: tuple) -> str:
    return f"{pair[0]} (config {pair[1]})"


def repair(report: VerifyReport) -> None:
    """Move what ``report`` found into quarantine (never delete); rows of shared files are filtered out."""
    root = report.root
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    dest = root / QUARANTINE / stamp
    reasons: list[str] = []

    def quarantine(path: Path, why: str) -> None:
        target = dest / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        fsync_path(path.parent)
        fsync_path(target.parent)
        rel = path.relative_to(root)
        reasons.append(f"{rel}\t{why}")
        report.moved.append(str(rel))

    for path, why in sorted(report.whole.items()):
        quarantine(path, why)
    for path, keys in sorted(report.rows.items()):
        if path in report.whole or not path.is_file():
            continue
        table = path.parent.name
        data = pq.read_table(path)
        names = KEY_COLUMNS[table][: len(next(iter(keys)))]
        mask = pc.is_in(_key_strings(data, names), value_set=pa.array(["\x1f".join(map(str, k)) for k in keys]))
        kept = data.filter(pc.invert(mask))
        if kept.num_rows == 0:
            quarantine(path, "all rows: " + "; ".join(_name(k) for k in sorted(keys, key=str)[:3]))
            continue
        copy = path.with_name(f".{path.name}.repair")
        durable_write(copy, lambda fh, kept=kept: pq.write_table(kept, fh, compression="zstd"))
        quarantine(path, f"{data.num_rows - kept.num_rows} rows taken out (the rest stays in place)")
        os.replace(copy, path)
        fsync_path(path.parent)
    if reasons:
        (dest / "reasons.tsv").write_text("file\twhy\n" + "\n".join(reasons) + "\n")


def _key_strings(data: pa.Table, names: tuple[str, ...]) -> pa.Array:
    parts = [pc.cast(pc.fill_null(data[n], "None"), pa.string()) for n in names]
    return pc.binary_join_element_wise(*parts, "\x1f")


def render(report: VerifyReport, *, max_problems: int = 20) -> str:
    lines = [f"pans verify {report.root}"]
    for table, st in report.tables.items():
        if st.files:
            lines.append(f"  {table:15s} {st.files:6d} files {st.rows:12,d} rows")
    for note in report.notes[:5]:
        lines.append(f"  note: {note}")
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        for p in report.problems[:max_problems]:
            lines.append(f"  {p.kind:10s} {p.table}: {p.message}")
        if len(report.problems) > max_problems:
            lines.append(f"  ... and {len(report.problems) - max_problems} more")
    if report.moved:
        lines.append(f"repaired: moved {len(report.moved)} file(s) to {report.root / QUARANTINE}/ (nothing deleted); "
                     "rerun the survey to redo models taken out")
    elif report.problems:
        lines.append(f"FAILED: `pans verify {report.root} --repair` moves what breaks the invariants into "
                     f"{report.root / QUARANTINE}/")
    else:
        lines.append("OK: every model once, every count consistent, every file readable")
    return "\n".join(lines) + "\n"
