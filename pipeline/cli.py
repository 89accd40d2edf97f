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
    """argparse that reports a malformed option in one line, plus where to read the options.

    (argparse's default prints the whole usage block first: a wall of text for ``pans survey``.)
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n(see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pans", description="Find Padding Aware Neurons across model zoos.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS.names():
        command = COMMANDS.get(name)
        cmd_parser = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(cmd_parser)
        cmd_parser.set_defaults(_run=command.run, _parser=cmd_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the sub-command in the message, as for its own options
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
