"""`python -m finetune train ...` (also `accelerate launch -m finetune train ...`), `convert`, `fetch`, `cache`,
`trim-vocab` and `adapter`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from data_pipeline.commands import Command, run_command_line
from data_pipeline.commands import build_parser as build_command_parser

# Idle OpenMP threads sleep instead of spinning (set before torch loads). On a CPU shared with other work, spinning
# threads measured up to 8x slower training steps; on an idle machine the difference is small.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROG = "python -m finetune"

COMMANDS = [
    Command("train", "finetune.commands.train", "fine-tune or train a GLIDE base / upsampler / inpainting model"),
    Command("convert", "finetune.commands.convert", "OpenAI GLIDE .pt -> model folder"),
    Command(
        "fetch", "finetune.commands.fetch", "download OpenAI's released GLIDE weights by name into the model cache"
    ),
    Command("cache", "finetune.commands.cache", "list or remove cached models"),
    Command(
        "trim-vocab", "finetune.commands.trim_vocab", "copy a model folder with its vocabulary trimmed to its captions"
    ),
    Command("adapter", "finetune.adapters.command", "LoRA adapters: merge into a model folder, teach a character"),
]


class CommandLineParser:
    """What `build_parser()` returns: it parses an argv the way the command line does, building the parser for
    that argv (only the chosen subcommand's module is imported)."""

    def parse_args(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if argv is None else argv)
        return build_command_parser(PROG, __doc__, COMMANDS, argv).parse_args(argv)


def build_parser() -> CommandLineParser:
    return CommandLineParser()


def main(argv: list[str] | None = None) -> int:
    return run_command_line(PROG, __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
