"""What the driver shows while a survey runs.

A live bar on a terminal (rich): done / failed / running, models per minute, ETA. In a log
(``ray job submit``, CI) one line per finished model instead, so the log tells the same story.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol

from pipeline.survey.records import Counts, ModelRecord


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

