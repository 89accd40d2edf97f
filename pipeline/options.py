"""Option values shared by the command line and the Python API: parsing and the checks on them.

argparse ``type`` functions (``positive_int``, ``count``, ...) say in one line what they expected;
checks that the Python API runs too (``gpu_share_problem``) live here once and are used by both.
Imports nothing heavy: every command's options are built from here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Self


def _number(cast: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse ``type`` that parses with ``cast`` and accepts what ``ok`` allows, with one message."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
positive_float = _number(float, lambda v: v > 0, "a positive number")
count = _number(int, lambda v: v >= 0, "a whole number >= 0")
fraction = _number(float, lambda v: 0 < v < 1, "a number between 0 and 1")


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; ``""`` -> ``()``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def gpu_share_problem(share: float) -> str | None:
    """Why ``share`` is not a GPU share of one task (a fraction of one GPU, or whole GPUs); None when it is."""
    if share < 0 or (share > 1 and share % 1):
        return "use a fraction of one GPU (0-1) or a whole number of GPUs"
    return None


def gpu_share(text: str) -> float:
    """argparse ``type`` of ``--gpus-per-model``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a GPU share such as 0.25 or 1, got {text!r}") from None
    if gpu_share_problem(value):
        raise argparse.ArgumentTypeError(f"expected a fraction of one GPU (0-1) or whole GPUs, got {text!r}")
    return value


class FromArgs:
    """A dataclass of option values built from a parsed command line by field name (one way, every command).

    Each field is read from the option whose ``dest`` has its name; a field the command has no
    option for keeps its default. Subclasses whose fields are not dataclass fields override
    :meth:`field_names`.
    """

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every field's name: the constructor's keyword and the ``dest`` of its command-line option."""
        from dataclasses import fields

        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        return cls(**{name: getattr(args, name) for name in cls.field_names() if hasattr(args, name)})
