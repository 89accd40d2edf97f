"""User-facing errors: the CLI prints these as one line, without a traceback."""

from __future__ import annotations


class PanSurveyError(Exception):
    """An error caused by input the user gave (a spec, a path, an option).

    The message must say what was wrong and, where possible, what to do instead.
    """


class UnknownModelError(PanSurveyError):
    """A spec names a model or architecture that no source knows."""


class ModelLoadError(PanSurveyError):
    """A model was found but could not be built or its weights could not be loaded."""


class ProbeError(PanSurveyError):
    """The probe images could not be produced (empty folder, unreadable file, bad option)."""


class FetchError(ModelLoadError):
    """Weights could not be fetched for a permanent reason (not found, gated, private, offline miss)."""


class OfflineCacheMissError(FetchError):
    """Offline mode is on and a needed file is not in the local cache."""


class TransientFetchError(FetchError):
    """A download kept failing for a reason that may pass (rate limit, 5xx, dropped link): retries ran out."""


class CorruptWeightsError(FetchError):
    """A weight file does not match the hash the hub published for it, even after fetching it again."""


def one_line(exc: BaseException, limit: int = 300, *, first_line_only: bool = False) -> str:
    """The text of ``exc`` on one line, at most ``limit`` characters; its type name when it has none.

    By default every line is kept, whitespace collapsed (a load error's list of missing keys stays
    readable); ``first_line_only`` keeps the first line (DuckDB's and Ray's messages put the
    statement or a traceback after it).
    """
    text = str(exc).strip()
    text = (text.splitlines()[0] if text else "") if first_line_only else " ".join(text.split())
    return (text or type(exc).__name__)[:limit]
