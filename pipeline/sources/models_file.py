"""Models files: one spec per line, ``#`` starts a comment, blank lines are ignored.

A file lets a survey be rerun with exactly the same list and kept under version control.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import PanSurveyError


def read_models_file(path: str | Path) -> list[str]:
    """The specs in ``path``, in order; an unreadable or empty file is a one-line error."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PanSurveyError(f"models file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PanSurveyError(f"models file {path} cannot be read: {exc}") from None
    specs = [_unquote(line.split("#", 1)[0].strip()) for line in text.splitlines()]
    specs = [spec for spec in specs if spec]
    if not specs:
        raise PanSurveyError(f"models file {path} lists no models (one spec per line, # for comments)")
    return specs


def _unquote(spec: str) -> str:
    """``'resnet*'`` -> ``resnet*``: shell quotes copied into a file are forgiven."""
    if len(spec) >= 2 and spec[0] == spec[-1] and spec[0] in "'\"":
        return spec[1:-1].strip()
    return spec


def collect_specs(specs: Sequence[str], models_file: str | Path | None = None) -> list[str]:
    """Specs from the command line followed by those of ``--models-file``; at least one is needed."""
    out = [s.strip() for s in specs if s.strip()]
    if models_file:
        out.extend(read_models_file(models_file))
    if not out:
        raise PanSurveyError("no models given: name specs or use --models-file")
    return out
