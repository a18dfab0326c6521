"""`python -m sampling generate | comic | inpaint | studio`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from data_pipeline.oserrors import describe_os_error

from .commands.common import CommandError
from .rerank import RerankUnavailable

# Subcommand -> module with DESCRIPTION, add_arguments(parser) and run(args).
SUBCOMMANDS = {
    "generate": "sampling.commands.generate",
    "comic": "sampling.commands.comic",
    "inpaint": "sampling.commands.inpaint",
    "studio": "sampling.studio.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sampling", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        description = getattr(module, "DESCRIPTION", None) or (module.__doc__ or "").strip().splitlines()[0]
        command = sub.add_parser(name, help=description, description=description)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        args._module.run(args)
    except (CommandError, ValueError, RerankUnavailable) as exc:  # messages meant for the user (bad input, settings)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished outputs are kept and a rerun continues from them", file=sys.stderr)
        return 130
    except OSError as exc:  # a full or read-only disk, --out naming a file, ...: finished outputs are kept
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
