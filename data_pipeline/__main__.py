"""`python -m data_pipeline SOURCE ... --out DIR`: build and inspect caption-image datasets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from data_pipeline import commands
from data_pipeline.commands import Command, run_command_line

PROG = "python -m data_pipeline"
DESCRIPTION = (
    "Build caption-image datasets as WebDataset shards (DIR/<size>/NNNNN.tar + DIR/manifest.json) and inspect "
    "them. Rerunning a build resumes it."
)
COMMANDS = [
    Command(
        "folder",
        "data_pipeline.sources.folder",
        "images in a folder with captions (CSV or imagefolder metadata.jsonl)",
    ),
    Command(
        "flickr30k",
        "data_pipeline.sources.flickr30k",
        "Flickr30k images with their five captions (token or Kaggle CSV layout)",
    ),
    Command("inspect", "data_pipeline.shard_report", "summarise a built dataset and draw a contact sheet"),
    Command("laion", "data_pipeline.sources.laion", "filter LAION parquet metadata and download the kept images"),
    Command(
        "wikipedia",
        "data_pipeline.sources.wikipedia",
        "captioned images of wiki articles (MediaWiki API + BeautifulSoup)",
    ),
    Command(
        "retry",
        "data_pipeline.download.retry",
        "fetch again the failed samples of an earlier laion/wikipedia download, by reason",
    ),
    Command(
        "synthetic",
        "data_pipeline.sources.synthetic",
        "a procedural world of captioned coloured shapes (plain or comic style)",
    ),
    Command(
        "openmoji",
        "data_pipeline.sources.openmoji",
        "OpenMoji emoji rendered from the colour font, captioned from CLDR names (CC BY-SA 4.0)",
    ),
    Command(
        "emoji-scenes",
        "data_pipeline.emoji_world.command",
        "scenes of OpenMoji emoji at named positions, sizes and backgrounds (CC BY-SA 4.0)",
    ),
]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser; without `argv`, with every subcommand's options (see commands.build_parser)."""
    return commands.build_parser(PROG, DESCRIPTION, COMMANDS, argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command_line(PROG, DESCRIPTION, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
