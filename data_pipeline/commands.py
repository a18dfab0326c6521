"""The one subcommand protocol every `python -m data_pipeline|finetune|sampling` entry point follows.

A subcommand is a module with `add_arguments(parser)` and `run(args) -> int`, and optionally a `DESCRIPTION`
string for its `--help`. Each `__main__` lists its subcommands as `Command(name, module, help)` and hands them to
`run_command_line`, which imports only the chosen module (so `--help` and short commands do not pay for torch),
and turns the failures a user can fix into one line on stderr:

- `UserError` (and the subclasses each package defines): `error: ...`, exit status 2;
- `OSError` (full or read-only disk, a missing file): `error: ...` naming the path, exit status 1;
- Ctrl-C: a note that rerunning resumes, exit status 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from data_pipeline.errors import UserError
from data_pipeline.oserrors import describe_os_error


@dataclass(frozen=True)
class Command:
    name: str
    module: str  # dotted module path with add_arguments(parser) and run(args) -> int
    help: str


def _chosen(argv: Sequence[str], names: set[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in names else None
    return None


def build_parser(prog: str, description: str, commands: Sequence[Command], argv: Sequence[str] | None = None):
    """The parser for `argv`: every subcommand is listed, only the chosen one's module is imported. Without
    `argv`, every subcommand's module is imported and its options added (for tools and tests that look at all)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None if argv is None else _chosen(argv, {command.name for command in commands})
    for command in commands:
        if argv is not None and command.name != chosen:
            subparsers.add_parser(command.name, help=command.help)
            continue
        module = importlib.import_module(command.module)
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=getattr(module, "DESCRIPTION", command.help),
            formatter_class=getattr(module, "FORMATTER", argparse.HelpFormatter),
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def run_command_line(
    prog: str, description: str, commands: Sequence[Command], argv: Sequence[str] | None = None
) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog, description, commands, argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # a full or read-only disk, an output path naming a file, ...
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
