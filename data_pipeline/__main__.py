"""`python -m data_pipeline SOURCE ... --out DIR`: build and inspect caption-image datasets."""

from __future__ import annotations

import argparse
import importlib
import sys

from data_pipeline.oserrors import describe_os_error

# Each module exposes register(subparsers), which adds one subcommand whose `func(args)` returns
# the exit status. One line per subcommand module.
SUBCOMMAND_MODULES = [
    "data_pipeline.sources.folder",
    "data_pipeline.sources.flickr30k",
    "data_pipeline.shard_report",
    "data_pipeline.sources.laion",
    "data_pipeline.sources.wikipedia",
    "data_pipeline.download.retry",
    "data_pipeline.sources.synthetic",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_pipeline",
        description="Build caption-image datasets as WebDataset shards (DIR/<size>/NNNNN.tar + "
        "DIR/manifest.json) and inspect them. Rerunning a build resumes it.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # a full or read-only disk, --out naming a file, ...: complete shards stay as they are
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
