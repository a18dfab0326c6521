"""Command-line pieces shared by the dataset subcommands: the writer options, the build step, and the error type
for option values the parser accepted but a command cannot use."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from data_pipeline import images
from data_pipeline.errors import UserError
from data_pipeline.runner import Produce, build_dataset
from data_pipeline.shards import ShardTask, WriterConfig, normalize_size


def parse_sizes(text: str) -> tuple[int | str, ...]:
    """`--sizes 32,64,48x32`: squares as ints, WxH shapes as "WxH" (data_pipeline.shards.normalize_size)."""
    try:
        sizes = tuple(normalize_size(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"sizes must be comma-separated positive integers N (square) or WxH, got {text!r}"
        ) from None
    if not sizes:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


class OptionError(UserError):
    """A command-line value argparse accepted but the command cannot use (`--count 0`, an empty --allow-network)."""


@contextmanager
def exit_status_1() -> Iterator[None]:
    """Turn the UserErrors raised inside into `SystemExit("error: ...")`: exit status 1 instead of the 2 that
    `run_command_line` gives them, with the same one-line message.

    A documented choice to keep `python -m data_pipeline`'s exit statuses as they were (issue #13): these checks
    (bad writer, download, filter and world options; a folder, Flickr30k root or dataset that is not there) have
    always ended with status 1, and tests pin it (`pytest.raises(SystemExit)` in tests/data_pipeline/
    test_folder_source, test_flickr_source, test_inspect_report, test_synthetic_command). Removing this context
    manager from the commands makes every user error exit 2 with the same messages."""
    try:
        yield
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None


def add_writer_options(parser: argparse.ArgumentParser) -> None:
    """The output options every dataset-building subcommand takes."""
    group = parser.add_argument_group("output")
    group.add_argument("--out", required=True, help="dataset directory (DIR/<size>/NNNNN.tar, DIR/manifest.json)")
    group.add_argument(
        "--sizes",
        type=parse_sizes,
        default=(64,),
        help="comma-separated output sizes, one shard set DIR/<size>/ each: N for N x N, WxH for a non-square "
        "shape (e.g. 32,64x32,32x64: every sample in every shape, same keys; default: 64)",
    )
    group.add_argument(
        "--resize-mode",
        choices=images.RESIZE_MODES,
        default="center_crop",
        help="center_crop: fill the output shape and cut the overflow; pad: fit inside and pad (default: center_crop)",
    )
    group.add_argument(
        "--image-format",
        choices=sorted(images.IMAGE_FORMATS),
        default="jpg",
        help="encoding of the images in the shards (default: jpg)",
    )
    group.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default: 95)")
    group.add_argument(
        "--val-fraction",
        type=_fraction,
        default=0.0,
        help="fraction of samples marked split=val, chosen by a stable hash (default: 0)",
    )
    group.add_argument("--shard-size", type=int, default=1000, help="input items per shard (default: 1000)")
    group.add_argument(
        "--min-image-side", type=int, default=1, help="drop images whose original short side is smaller (default: 1)"
    )
    group.add_argument(
        "--dedupe",
        type=int,
        default=None,
        metavar="BITS",
        help="remove near-duplicate images whose perceptual hashes differ in at most BITS bits "
        "(0 = identical hash; about 8 catches resized or recompressed copies); off by default",
    )
    group.add_argument(
        "--processes",
        type=int,
        default=max(1, min(4, os.cpu_count() or 1)),
        help="worker processes, one shard each at a time (default: min(4, cores))",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def writer_config_from_args(args: argparse.Namespace) -> WriterConfig:
    try:
        return WriterConfig(
            out_dir=args.out,
            sizes=args.sizes,
            resize_mode=args.resize_mode,
            image_format=args.image_format,
            quality=args.quality,
            val_fraction=args.val_fraction,
            shard_size=args.shard_size,
            min_image_side=args.min_image_side,
            dedupe_distance=args.dedupe,
        )
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def run_build(
    args: argparse.Namespace,
    tasks: Sequence[ShardTask],
    produce: Produce,
    sources: list[dict],
    filters: dict | None = None,
    config: WriterConfig | None = None,
) -> int:
    """Build the dataset, print a summary, return the exit status (1 when a shard failed)."""
    config = config or writer_config_from_args(args)
    summary, manifest = build_dataset(
        tasks,
        produce,
        config,
        processes=args.processes,
        progress=not args.no_progress,
        sources=sources,
        filters=filters,
    )
    return report_build(config, summary, manifest)


def report_build(config: WriterConfig, summary, manifest: dict) -> int:
    """Print a finished build's summary (local or Ray); the exit status is 1 when a shard failed."""
    totals = manifest["totals"]
    print(
        f"{config.out_dir}: {totals['samples']} samples in {totals['shards']}/{totals['expected_shards']} shards "
        f"({summary.shards_skipped} already complete), {totals['failed']} failed, "
        f"splits {json.dumps(manifest['splits'])}, {summary.duration:.1f}s"
    )
    if manifest["failures"]:
        print("failures by reason: " + ", ".join(f"{k}={v}" for k, v in manifest["failures"].items()))
    for error in summary.errors:
        print(f"error: {error}", file=sys.stderr)
    if summary.errors:
        print("some shards did not finish; rerun the same command to resume", file=sys.stderr)
        return 1
    return 0
