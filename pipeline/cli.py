"""The ``pans`` command line. Thin: each sub-command lives in ``pipeline/commands/<name>.py``.

Errors the user can fix (:class:`PanSurveyError`) print as one line and exit 2; nothing else
is caught here, so a real bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.commands import COMMANDS
from pipeline.errors import PanSurveyError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a malformed option as one line plus the usage line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"pans: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pans", description="Find Padding Aware Neurons across model zoos.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS.names():
        command = COMMANDS.get(name)
        cmd_parser = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(cmd_parser)
        cmd_parser.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except PanSurveyError as exc:
        print(f"pans {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pans {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
