"""Keep Ray's own output out of the terminal: it goes to ``DIR/logs/``, the terminal gets one line per event.

While a survey runs, the driver's file descriptors 1 and 2 point at ``DIR/logs/survey-RUN.log``:
whatever Ray writes there (its Python loggers, the memory monitor's kill reports the raylet
forwards to the driver, C++ warnings and stack dumps) lands in the log, whatever prints it. The
survey's own progress and event lines go to :attr:`SurveyLog.terminal`, a duplicate of the
terminal taken before the redirection. Full error texts (an out-of-memory report names the
node's top memory users) are appended to the log with :meth:`SurveyLog.detail`. On the embedded
runtime the Ray session's raylet and worker logs are copied to ``DIR/logs/ray-RUN/`` at the end.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

#: Ray session log files copied beside the results (the memory monitor reports in raylet.out).
SESSION_LOGS = ("raylet.out", "raylet.err", "worker-*.out", "worker-*.err", "python-core-driver-*.log")


def _terminal_copy(stream: TextIO, fd: int) -> tuple[TextIO, bool]:
    """A stream that still reaches the terminal after ``fd`` is redirected (and whether we own it).

    When ``stream`` is not the process's ``fd`` (pytest's capture, a notebook), it is kept as is.
    """
    try:
        same = stream.fileno() == fd
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        same = False
    if not same:
        return stream, False
    stream.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8"), True


class SurveyLog:
    """Context manager: redirect fds 1 and 2 into the survey's log file for the run's duration."""

    def __init__(self, out: Path, run_id: str, *, redirect: bool = True) -> None:
        self.dir = Path(out) / "logs"
        self.path = self.dir / f"survey-{run_id}.log"
        self.run_id = run_id
        self.redirect = redirect
        self.terminal: TextIO = sys.stdout
        self._owned = False
        self._saved: list[int] = []
        self._file: TextIO | None = None

    def __enter__(self) -> SurveyLog:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")  # closed in __exit__
        self._file.write(f"# survey {self.run_id} started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        if self.redirect:
            self.terminal, self._owned = _terminal_copy(sys.stdout, 1)
            for stream in (sys.stdout, sys.stderr):
                _flush(stream)
            self._saved = [os.dup(1), os.dup(2)]
            os.dup2(self._file.fileno(), 1)
            os.dup2(self._file.fileno(), 2)
        return self

    def detail(self, title: str, text: str) -> None:
        """Append a full error text (many lines) under a one-line title."""
        if self._file is not None and not self._file.closed:
            self._file.write(f"\n== {time.strftime('%H:%M:%S')} {title}\n{text.rstrip()}\n")

    def copy_session_logs(self) -> Path | None:
        """Copy the embedded Ray session's raylet and worker logs to ``DIR/logs/ray-RUN/``."""
        try:
            from ray._private import worker

            node = worker._global_node
            src = Path(node.get_logs_dir_path()) if node is not None else None
        except Exception:
            return None
        if src is None or not src.is_dir():
            return None
        dest = self.dir / f"ray-{self.run_id}"
        for pattern in SESSION_LOGS:
            for f in src.glob(pattern):
                if f.is_file() and f.stat().st_size:
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, dest / f.name)
        return dest if dest.is_dir() else None

    def __exit__(self, *exc: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)
        if self._saved:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self._saved = []
        if self._owned:
            self.terminal.flush()
            self.terminal.close()
            self.terminal, self._owned = sys.stdout, False
        if self._file is not None:
            self._file.close()


def _flush(stream: TextIO) -> None:
    with contextlib.suppress(OSError, ValueError):
        stream.flush()
