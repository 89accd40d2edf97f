"""What the driver shows while a survey runs.

A live bar on a terminal (rich): done / failed / running, models per minute, ETA, and one line
per failure (a 200-model survey fits one screen). In a log (``ray job submit``, CI) one line per
finished model instead, so the log tells the same story. A failure whose full text went to the
survey's log file (``DIR/logs/``) names it; so does the summary.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Protocol, TextIO

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


#: Longest error message on a progress line (the whole text is in the failures table and the log).
MESSAGE_CHARS = 160


def event_line(record: ModelRecord, *, with_id: bool = True) -> str:
    """One line for a failed model: what, why (short), and where the details are."""
    message = " ".join((record.message or "").split())
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 3] + "..."
    why = f"{message or record.error_type} ({record.stage}: {record.error_type})"
    line = f"{record.model_id}: {why}, recorded as failed" if with_id else f"{why}, recorded as failed"
    return line + (f"; details: {record.details}" if record.details else "")


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

    #: Seconds between two "waiting for ..." lines.
    WAIT_EVERY = 30.0

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()
        self._waited: float | None = None

    def update(self, counts: Counts) -> None:
        now = time.monotonic()
        if counts.waiting is None:
            self._waited = None
        elif self._waited is None or now - self._waited >= self.WAIT_EVERY:
            self._waited = now
            print(counts.waiting, file=self.stream, flush=True)

    def finished(self, record: ModelRecord, counts: Counts) -> None:
        per_min, eta = rate_and_eta(counts, time.monotonic() - self.t0)
        what = f"{record.pans} PANs" if record.status == "done" else f"FAILED: {event_line(record, with_id=False)}"
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

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.t0 = time.monotonic()
        self.bar = Progress(
            TextColumn("survey"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("done {task.fields[done]}  failed {task.fields[failed]}  running {task.fields[running]}"),
            TextColumn("{task.fields[rate]} models/min  ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[waiting]}"),
            transient=False,
            console=Console(file=stream or sys.stdout),
        )
        self.task = self.bar.add_task(
            "survey", total=total, done=0, failed=0, running=0, rate="0.0", eta="--:--", waiting=""
        )
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
            waiting=counts.waiting or "",
        )

    def finished(self, record: ModelRecord, counts: Counts) -> None:
        if record.status != "done":
            from rich.text import Text

            line = Text.assemble(("failed ", "red"), event_line(record))
            self.bar.console.print(line, no_wrap=True, overflow="ellipsis")
        self.update(counts)

    def close(self) -> None:
        self.bar.stop()


def make_progress(mode: str, total: int, stream: TextIO | None = None, *, log: Path | None = None) -> Progress:
    """``auto``: a bar on a terminal, lines otherwise; ``bar``, ``lines`` or ``off`` to choose.

    ``stream``: where the progress goes (the terminal as it was before Ray's output was redirected).
    """
    if mode == "off":
        return NullProgress()
    stream = stream or sys.stdout
    if mode == "bar" or (mode == "auto" and _isatty(stream)):
        return RichProgress(total, stream)
    return LineProgress(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

