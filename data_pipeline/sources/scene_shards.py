"""What the two procedural worlds (`synthetic` shapes, `emoji-scenes`) share as dataset commands: scenes turned
into shard samples, and the options every scene command takes (count, seed, style, captions)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import Any

from data_pipeline.errors import UserError
from data_pipeline.shards import Sample, ShardTask
from data_pipeline.synthetic.world import STYLES


def scene_samples(
    task: ShardTask, make_scene: Callable[..., tuple], source: str, seed: int, fields: dict[str, Any], **options
) -> Iterator[Sample]:
    """Shard samples for task.items (global scene indices): scene i comes from make_scene(i, seed=seed, **options);
    `fields` are extra Sample fields (e.g. license and attribution)."""
    for position, index in enumerate(task.items):
        image, captions, attributes = make_scene(index, seed=seed, **options)
        yield Sample(
            index=position,
            image=image,
            caption=captions[0],
            captions=captions,
            source=source,
            attributes=attributes,
            group=f"{source}:{seed}:{index}",
            **fields,
        )


def add_scene_options(parser: argparse.ArgumentParser, style_help: str) -> None:
    # Flat colours, outlines and halftone dots suffer from JPEG artefacts; PNG is small at these sizes.
    parser.set_defaults(image_format="png")
    parser.add_argument("--count", type=int, default=1000, help="number of images (default: 1000)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; scene i depends only on (seed, i) (default: 0)"
    )
    parser.add_argument("--style", choices=STYLES, default="plain", help=style_help)


def add_caption_options(parser: argparse.ArgumentParser) -> None:
    captions = parser.add_argument_group("captions")
    captions.add_argument(
        "--captions-per-image",
        type=int,
        default=3,
        help="distinct phrasings stored per image; the first is KEY.txt (default: 3)",
    )
    captions.add_argument(
        "--style-word-p", type=float, default=0.5, help="share of comic captions that name the style (default: 0.5)"
    )


def check_scene_options(args: argparse.Namespace, error: type[UserError] = UserError) -> None:
    if args.count < 1:
        raise error("--count must be >= 1")
    if args.captions_per_image < 1:
        raise error("--captions-per-image must be >= 1")
    if not 0.0 <= args.style_word_p <= 1.0:
        raise error("--style-word-p must be between 0 and 1")
