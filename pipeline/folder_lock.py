"""One writer at a time per results folder: ``DIR/.pans.lock``, held by every command that writes.

``pans detect``, ``pans impact``, ``pans survey`` and ``pans compact`` take the lock before they
change anything; a second writer stops at once with a one-line error naming the holder (command,
pid, host, since when). The lock is an ``flock`` on the file, so the kernel drops it the moment
its process dies, however it dies: a lock left by a killed process is stale by construction and
the next writer takes it over (and says so). The file's text (who holds it) is only for messages.

Readers (query, stats, report, verify without ``--repair``) take no lock: every file they can see
was renamed into place complete.

The lock is re-entrant within a thread (a survey holding it can run the compaction recovery,
which takes it too); another thread of the same process is another writer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PanSurveyError

LOCK_NAME = ".pans.lock"

_held: dict[tuple[str, int], int] = {}  # (lock path, thread) -> nesting depth


class FolderBusy(PanSurveyError):
    """Another process holds the folder's writer lock."""


def lock_path(root: str | Path) -> Path:
    return Path(root).expanduser() / LOCK_NAME


def holder(root: str | Path) -> dict:
    """Who holds (or last held) the lock, as written in the lock file; {} when unknown."""
    try:
        return json.loads(lock_path(root).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(info: dict) -> str:
    if not info:
        return "another process"
    where = f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('since', '?')}"
    return f"`pans {info.get('command', '?')}` ({where})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def writer_lock(root: str | Path, command: str, *, quiet: bool = False) -> Iterator[None]:
    """Hold ``root``'s writer lock for the body, or raise :class:`FolderBusy` at once."""
    path = lock_path(root)
    key = (str(path.resolve()), threading.get_ident())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(f"{Path(root)} is being written by {describe(holder(root))}; "
                             "wait for it to finish (one writer per results folder)") from None
        previous = holder(root)
        host = socket.gethostname()
        stale = previous and previous.get("host") == host and previous.get("pid") != os.getpid()
        if stale and not quiet and not _pid_alive(int(previous.get("pid", 0) or 0)):
            print(f"note: took over the lock of {Path(root)} left by {describe(previous)}, which is no longer "
                  "running; the next write finishes or redoes what it left", file=sys.stderr)
        info = {"command": command, "pid": os.getpid(), "host": host,
                "since": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        key = (str(path.resolve()), threading.get_ident())
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released cleanly: nobody to name, nothing stale
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked_by_other(root: str | Path) -> bool:
    """True while another process holds the writer lock (for tests and ``pans verify``)."""
    path = lock_path(root)
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
