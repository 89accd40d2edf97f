"""Named fault-injection points, so tests can kill or starve a writer between any two of its steps.

A writer calls :func:`fault_point` (``"write:neurons"``, ``"compact:journal"``, ...) at each step
that matters for crash safety. Nothing happens unless the environment names that point::

    PANS_FAULT=write:models          # the point to fire at
    PANS_FAULT_ACTION=kill           # kill (SIGKILL this process, default) | enospc (raise a full-disk OSError)
    PANS_FAULT_AFTER=0               # skip this many hits of the point first (default 0)

Reading the environment at each call keeps it usable both from a subprocess (``pans detect``
killed mid-write) and in-process (a test sets the variable with monkeypatch). The cost is one
dictionary lookup per file written.
"""

from __future__ import annotations

import errno
import os
import signal

_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Fire the fault the environment asks for at ``name``; a no-op otherwise."""
    wanted = os.environ.get("PANS_FAULT")
    if not wanted or wanted != name:
        return
    seen = _hits.get(name, 0)
    _hits[name] = seen + 1
    if seen < int(os.environ.get("PANS_FAULT_AFTER", "0")):
        return
    action = os.environ.get("PANS_FAULT_ACTION", "kill")
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"(injected at {name})")
    os.kill(os.getpid(), signal.SIGKILL)


def reset() -> None:
    """Forget how often each point fired (tests that set PANS_FAULT_AFTER in-process)."""
    _hits.clear()
