"""Bounded retries for downloads: a transient failure waits and tries again, a permanent one fails at once.

Every download in :mod:`pipeline.sources` goes through :func:`retry_call`, so the limits (attempts,
longest single wait, total time) are the same everywhere and can be set in one place: the
``PANS_FETCH_*`` environment variables or a :class:`RetryPolicy` passed in (tests use tiny delays).
A server's ``Retry-After`` is honoured, but never beyond the total time budget: if the hub asks
for a longer wait than is left, the fetch fails now with a message saying so.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pipeline.errors import FetchError, TransientFetchError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How long a fetch may keep trying. Defaults suit a shared hub; tests pass small numbers."""

    attempts: int = 5  # tries in all, the first one included
    base_delay: float = 1.0  # first wait; doubles after each failure
    max_delay: float = 30.0  # cap on one backoff wait (a Retry-After is capped by total_seconds instead)
    total_seconds: float = 300.0  # no new attempt starts once this much time has passed
    timeout: float = 10.0  # seconds to wait for the hub's answer to a metadata request

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Read ``PANS_FETCH_ATTEMPTS``, ``_BASE_DELAY``, ``_MAX_DELAY``, ``_TOTAL_SECONDS``, ``_TIMEOUT``."""
        defaults = cls()
        values: dict[str, float] = {}
        for name in ("attempts", "base_delay", "max_delay", "total_seconds", "timeout"):
            raw = os.environ.get(f"PANS_FETCH_{name.upper()}")
            if raw:
                try:
                    values[name] = float(raw)
                except ValueError:
                    raise FetchError(f"PANS_FETCH_{name.upper()}={raw!r} is not a number") from None
        if "attempts" in values:
            values["attempts"] = max(1, int(values["attempts"]))
        return cls(**{**defaults.__dict__, **values})

    def backoff(self, failures: int) -> float:
        """Exponential backoff after the ``failures``-th failure (1-based), capped at ``max_delay``."""
        return min(self.max_delay, self.base_delay * (2 ** (failures - 1)))


class Transient(Exception):
    """Raised inside a fetch step for a failure worth retrying; carries the server's wait hint."""

    def __init__(self, reason: str, retry_after: float | None = None, corrupt: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.corrupt = corrupt


def retry_call(
    step: Callable[[int], T],
    *,
    what: str,
    policy: RetryPolicy | None = None,
    give_up: Callable[[str, Transient], FetchError] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``step(attempt)`` until it returns; retry on :class:`Transient`, let anything else through.

    ``give_up(message, last)`` builds the error raised when the bounds are reached (default:
    :class:`TransientFetchError`).
    """
    policy = policy or RetryPolicy.from_env()
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return step(attempt)
        except Transient as exc:
            elapsed = time.monotonic() - start
            if attempt >= policy.attempts:
                message = f"{what}: gave up after {attempt} attempts in {elapsed:.1f}s: {exc.reason}"
                raise (give_up or _default_give_up)(message, exc) from None
            delay = policy.backoff(attempt)
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            if elapsed + delay > policy.total_seconds:
                message = (
                    f"{what}: {exc.reason}; the next try would start after {elapsed + delay:.0f}s, "
                    f"beyond the {policy.total_seconds:.0f}s fetch budget (PANS_FETCH_TOTAL_SECONDS)"
                )
                raise (give_up or _default_give_up)(message, exc) from None
            log.warning(
                "%s: %s; retrying in %.2fs (attempt %d of %d)", what, exc.reason, delay, attempt + 1, policy.attempts
            )
            sleep(delay)


def _default_give_up(message: str, last: Transient) -> FetchError:
    return TransientFetchError(message)
