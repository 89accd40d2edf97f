"""Sub-commands of ``pans``. Adding one: a module here with ``add_arguments(parser)`` and a ``run(args)``
function decorated with ``@command(name, help=...)``, plus its import at the bottom of this file.

Command modules import only argparse-level code at the top (heavy imports go inside ``run``), so
``pans query`` and every ``--help`` start without loading PyTorch (tests/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.registry import Registry


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: Registry[Command] = Registry("command")


def command(name: str, help: str):
    """Register a module-level pair ``add_arguments(parser)`` / ``run(args)`` as ``pans NAME``."""

    def decorator(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        add_arguments = run.__globals__["add_arguments"]
        COMMANDS.register(name)(Command(help=help, add_arguments=add_arguments, run=run))
        return run

    return decorator


# One import per command module (each registers itself).
from pipeline.commands import compact, detect, impact, query, report, stats, survey, verify, zoo  # noqa: E402,F401
