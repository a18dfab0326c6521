"""`python -m sampling generate | comic | inpaint | studio`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from data_pipeline.commands import Command, run_command_line
from data_pipeline.commands import build_parser as build_command_parser

PROG = "python -m sampling"
COMMANDS = (
    Command(
        "generate",
        "sampling.commands.generate",
        "Generate images from captions (classifier-free guidance, optional upsampler).",
    ),
    Command(
        "comic",
        "sampling.commands.comic",
        "Make comic pages from a panel script: panels, lettering (narration, balloons), page layout.",
    ),
    Command(
        "inpaint",
        "sampling.commands.inpaint",
        "Inpaint: regenerate the white region of a mask over an image, guided by a caption.",
    ),
    Command("studio", "sampling.studio.cli", "Serve the web studio (127.0.0.1 unless told otherwise)."),
)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for `argv`, with the chosen subcommand's arguments."""
    return build_command_parser(PROG, __doc__, COMMANDS, argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_command_line(PROG, __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
