"""SIGINT and SIGTERM end a survey cleanly: one line, nothing half-written, exit 130 or 143.

Ray installs its own SIGTERM handler in ``ray.init`` (and its C++ core prints a stack dump on
signals), so the survey installs these after connecting. The handler only raises
:class:`SurveyInterrupted` in the driver's main thread; the store writes each file aside and
renames it into place, so an interrupt at any point leaves every file whole, and the runtime is
shut down on the way out. A rerun resumes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class SurveyInterrupted(Exception):
    """The survey was stopped by a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(signal.Signals(signum).name)


def _raise(signum: int, _frame: Any) -> None:
    # A second signal while the runtime shuts down must not cut the clean-up short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SurveyInterrupted(signum)


def install() -> None:
    """(Re)install the survey's handlers; a no-op outside the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _raise)
        signal.signal(signal.SIGTERM, _raise)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block SIGINT/SIGTERM raise :class:`SurveyInterrupted`; the old handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    install()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
