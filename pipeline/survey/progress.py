"""What the driver shows while a survey runs, and the summary it prints at the end.

A live bar on a terminal (rich): done / failed / running, models per minute, ETA. In a log
(``ray job submit``, CI) one line per finished model instead, so the log tells the same story.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pipeline.survey.driver import ModelRecord, SurveySummary


@dataclass
class Counts:
    total: int
    done: int = 0
    failed: int = 0
    running: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.failed


def rate_and_eta(counts: Counts, elapsed: float) -> tuple[float, float | None]:
    """Models per minute so far and the seconds left at that rate (None before the first result)."""
    if counts.finished == 0 or elapsed <= 0:
        return 0.0, None
    per_min = counts.finished / elapsed * 60
    return per_min, (counts.total - counts.finished) / (per_min / 60)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60:02d}:{rem % 60:02d}"


class Progress(Protocol):
    def update(self, counts: Counts) -> None: ...
    def finished(self, record: ModelRecord, counts: Counts) -> None: ...
    def close(self) -> None: ...


class NullProgress:
    def update(self, counts: Counts) -> None:
        pass

    def finished(self, record: ModelRecord, counts: Counts) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """One line per finished model (for logs, where a redrawn bar is noise)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()

    def update(self, counts: Counts) -> None:
        pass

    def finished(self, record: ModelRecord, counts: Counts) -> None:
        per_min, eta = rate_and_eta(counts, time.monotonic() - self.t0)
        what = f"{record.pans} PANs" if record.status == "done" else f"FAILED at {record.stage}: {record.error_type}"
        print(
            f"[{counts.finished}/{counts.total}] {record.model_id}: {what} | done {counts.done} failed {counts.failed} "
            f"running {counts.running} | {per_min:.1f} models/min | ETA {_fmt_eta(eta)}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        pass


class RichProgress:
    """A live bar redrawn in place on a terminal."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.t0 = time.monotonic()
        self.bar = Progress(
            TextColumn("survey"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("done {task.fields[done]}  failed {task.fields[failed]}  running {task.fields[running]}"),
            TextColumn("{task.fields[rate]} models/min  ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self.task = self.bar.add_task("survey", total=total, done=0, failed=0, running=0, rate="0.0", eta="--:--")
        self.bar.start()

    def update(self, counts: Counts) -> None:
        per_min, eta = rate_and_eta(counts, time.monotonic() - self.t0)
        self.bar.update(
            self.task,
            completed=counts.finished,
            done=counts.done,
            failed=counts.failed,
            running=counts.running,
            rate=f"{per_min:.1f}",
            eta=_fmt_eta(eta),
        )

    def finished(self, record: ModelRecord, counts: Counts) -> None:
        if record.status != "done":
            from rich.text import Text

            why = f"{record.model_id} at {record.stage}: {record.error_type}: {record.message}"
            self.bar.console.print(Text.assemble(("failed ", "red"), why))
        self.update(counts)

    def close(self) -> None:
        self.bar.stop()


def make_progress(mode: str, total: int) -> Progress:
    """``auto``: a bar on a terminal, lines otherwise; ``bar``, ``lines`` or ``off`` to choose."""
    if mode == "off":
        return NullProgress()
    if mode == "bar" or (mode == "auto" and sys.stdout.isatty()):
        return RichProgress(total)
    return LineProgress()


def print_summary(summary: SurveySummary, stream=None) -> None:
    """The final table: what was surveyed, what failed, and where the results are."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream or sys.stdout, width=120, soft_wrap=False)
    table = Table(title=f"survey {summary.run_id}  (config {summary.config_id})", show_header=True)
    table.add_column("models", justify="right")
    table.add_column("done", justify="right")
    table.add_column("skipped (already done)", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("PANs", justify="right")
    table.add_column("padded neurons", justify="right")
    table.add_column("wall", justify="right")
    table.add_column("models/min", justify="right")
    per_min = summary.done / summary.wall_seconds * 60 if summary.wall_seconds > 0 else 0.0
    table.add_row(
        str(summary.requested),
        str(summary.done),
        str(summary.skipped),
        str(summary.failed),
        str(summary.pans),
        str(summary.padded_neurons),
        f"{summary.wall_seconds:.1f} s",
        f"{per_min:.1f}",
    )
    console.print(table)
    failures = [r for r in summary.models if r.status == "failed"]
    for rec in failures[:10]:
        why = f"  failed: {rec.model_id} at {rec.stage}: {rec.error_type}: {rec.message}"
        console.print(why, markup=False, soft_wrap=True)
    if len(failures) > 10:
        console.print(f"  ... and {len(failures) - 10} more (see {summary.out}/failures/)", markup=False)
    console.print(
        f"folder total for this config: {summary.folder_models} models, {summary.folder_pans} PANs", markup=False
    )
    console.print(f"results: {summary.out}  (neurons/ layers/ models/ failures/ runs/)", markup=False)
    if summary.impact_id:
        console.print(f"impact:  {summary.out}/impact*/  (impact settings {summary.impact_id})", markup=False)
    console.print(f"report:  pans report {summary.out} --out {summary.out}/report.html", markup=False)
    console.print(f"query:   pans query {summary.out} @pans_per_model", markup=False)
