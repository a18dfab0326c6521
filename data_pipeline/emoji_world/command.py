"""`emoji-scenes --out DIR`: captioned scenes of OpenMoji emoji (one or two at named positions and sizes on named
backgrounds, plain or comic style) written as shards, with the ground truth under `attributes`.

Scene i of a run depends only on (--seed, i), so a run resumes shard by shard and two runs with the same options
give the same dataset. manifest.json records the world, so the evaluator can be set up from it
(data_pipeline.emoji_world.emoji_world_from_manifest). The art is OpenMoji's (CC BY-SA 4.0): every sample carries
its licence and credit line, and so do datasets and models made from them. Needs `pip install autocomics[openmoji]`.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator

from data_pipeline import cli
from data_pipeline.errors import UserError
from data_pipeline.shards import Sample, ShardTask, plan_shards
from data_pipeline.sources.openmoji_art import ATTRIBUTION, LICENSE, master_glyph
from data_pipeline.sources.scene_shards import (
    add_caption_options,
    add_scene_options,
    check_scene_options,
    scene_samples,
)
from data_pipeline.synthetic.world import BACKGROUND_ORDER, POSITIONS

from .scenes import make_emoji_scene
from .vocabulary import CAST_HEXCODES, CAST_NAMES
from .world import DEFAULT_EMOJI_WORLD, SIZES, SOURCE_NAME, EmojiWorld, make_emoji_world

DESCRIPTION = __doc__
FORMATTER = argparse.RawDescriptionHelpFormatter
# Smallest render size: below it the glyphs are a few pixels (the writer still shrinks to any of --sizes).
MIN_RENDER_SIZE = 32


def produce_emoji_scenes(task: ShardTask, world: dict, seed: int, **options) -> Iterator[Sample]:
    """Shard producer: task.items are global scene indices. `world` is EmojiWorld.to_dict() (picklable)."""
    fields = {"license": LICENSE, "attribution": ATTRIBUTION}
    return scene_samples(
        task, make_emoji_scene, SOURCE_NAME, seed, fields, world=EmojiWorld.from_dict(world), **options
    )


def world_from_args(args: argparse.Namespace) -> EmojiWorld:
    try:
        return make_emoji_world(
            emoji=args.emoji, backgrounds=args.backgrounds, positions=args.positions, sizes=args.emoji_sizes,
            pair_p=args.pair_p,
        )  # fmt: skip
    except ValueError as exc:
        raise UserError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    check_scene_options(args)
    world = world_from_args(args)
    config = cli.writer_config_from_args(args)
    render_size = max(MIN_RENDER_SIZE, config.largest_side)
    master_glyph(CAST_HEXCODES[world.emoji[0]])  # fails here, once, when the art is not installed
    tasks = plan_shards(range(args.count), config.shard_size)
    options = {
        "seed": args.seed,
        "style": args.style,
        "size": render_size,
        "captions_per_image": args.captions_per_image,
        "style_word_p": args.style_word_p,
    }
    produce = functools.partial(produce_emoji_scenes, world=world.to_dict(), **options)
    source = {
        "type": SOURCE_NAME,
        "count": args.count,
        **options,
        "world": world.to_dict(),
        "license": LICENSE,
        "attribution": ATTRIBUTION,
    }
    return cli.run_build(args, tasks, produce, sources=[source], config=config)


def _vocabulary_text() -> str:
    d = DEFAULT_EMOJI_WORLD
    return (
        "vocabulary (a count N takes the first N of the list; or give comma-separated names):\n"
        f"  emoji:        {', '.join(CAST_NAMES)}\n"
        f"  backgrounds:  {', '.join(BACKGROUND_ORDER)}   (default {', '.join(d.backgrounds)})\n"
        f"  positions:    {', '.join(POSITIONS)}   (default all)\n"
        f"  emoji sizes:  {', '.join(f'{k} ({v:.0%} of the side)' for k, v in SIZES.items())}   "
        f"(default {', '.join(d.sizes)})\n\n"
        "example:\n"
        "  python -m data_pipeline emoji-scenes --out data/emoji --count 50000 --sizes 32,64 --seed 1"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli.add_writer_options(parser)
    parser.epilog = _vocabulary_text()
    add_scene_options(parser, "plain, or comic: a halftone-dot background (default: plain)")
    world = parser.add_argument_group("world (see the vocabulary below)")
    world.add_argument("--emoji", help="emoji count or names (default: the whole cast)")
    world.add_argument("--backgrounds", help="background colour count or names")
    world.add_argument("--positions", help="position count or names")
    world.add_argument("--emoji-sizes", help="size count or names")
    world.add_argument(
        "--pair-p",
        type=float,
        default=DEFAULT_EMOJI_WORLD.pair_p,
        help="share of scenes with two emoji at two corners (default: %(default)s)",
    )
    add_caption_options(parser)
