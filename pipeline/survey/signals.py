"""SIGINT and SIGTERM end a survey cleanly: one line, nothing half-written, exit 130 or 143.

Ray installs its own SIGTERM handler in ``ray.init`` (and its C++ core prints a stack dump on
signals), so the survey installs these again after connecting. Until then a signal raises
:class:`SurveyInterrupted` at once; once Ray is connected an exception raised inside Ray's
compiled calls would surface as a SystemError, so the handler only notes the signal and the
driver loop raises at its next turn (:func:`check`, at most ``POLL_SECONDS`` later). The store
writes each file aside and renames it into place, so every file is whole; the runtime is shut
down on the way out; a rerun resumes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class SurveyInterrupted(BaseException):
    """The survey was stopped by a signal; ``exit_code`` is 128 + the signal number.

    A BaseException, like KeyboardInterrupt: no ``except Exception`` on the way may swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(signal.Signals(signum).name)


_state: dict[str, Any] = {"defer": False, "signum": None}


def _handler(signum: int, _frame: Any) -> None:
    if _state["signum"] is None:
        _state["signum"] = signum
    if not _state["defer"]:
        _state["defer"] = True  # a second signal during the clean-up must not cut it short
        raise SurveyInterrupted(signum)


def install(*, defer: bool = True) -> None:
    """(Re)install the survey's handlers; ``defer``: note signals for :func:`check` instead of raising."""
    if threading.current_thread() is threading.main_thread():
        _state["defer"] = defer
        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)


def check() -> None:
    """Raise :class:`SurveyInterrupted` when a signal came in (the driver loop calls this each turn)."""
    if _state["signum"] is not None:
        _state["defer"] = True
        raise SurveyInterrupted(_state["signum"])


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block SIGINT/SIGTERM stop the survey; the old handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _state.update(defer=False, signum=None)
    install(defer=False)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
    check()  # a signal noted during the clean-up
    _state.update(defer=False, signum=None)
