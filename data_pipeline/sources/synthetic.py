"""`synthetic`: a procedural captioned world (shapes, colours, positions) written as shards.

Scene i of a run depends only on (--seed, i), so a run resumes shard by shard and two runs
with the same options give the same dataset. Each sample's JSON holds the ground truth under
`attributes`; manifest.json records the world, so the evaluator can be set up from it
(data_pipeline.synthetic.world_from_manifest).
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Iterator

from data_pipeline import cli
from data_pipeline.cli import OptionError, exit_status_1
from data_pipeline.shards import Sample, ShardTask, WriterConfig, plan_shards, size_dims
from data_pipeline.synthetic.scenes import make_scene
from data_pipeline.synthetic.shapes import SHAPE_NAMES
from data_pipeline.synthetic.world import (
    BACKGROUND_ORDER,
    DEFAULT_WORLD,
    POSITIONS,
    SHAPE_COLOR_ORDER,
    SIZES,
    SOURCE_NAME,
    World,
    make_world,
)

from .scene_shards import add_caption_options, add_scene_options, check_scene_options, scene_samples


def produce_synthetic(task: ShardTask, world: dict, seed: int, **options) -> Iterator[Sample]:
    """Shard producer: task.items are global scene indices. `world` is World.to_dict() (picklable)."""
    return scene_samples(task, make_scene, SOURCE_NAME, seed, {}, world=World.from_dict(world), **options)


def world_from_args(args: argparse.Namespace) -> World:
    try:
        return make_world(
            shapes=args.shapes,
            colors=args.colors,
            backgrounds=args.backgrounds,
            positions=args.positions,
            sizes=args.shape_sizes,
            position_jitter=args.position_jitter,
            size_jitter=args.size_jitter,
        )
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def parse_aspect(text: str) -> float:
    """`--aspect W:H` (or a plain width / height number) as width / height."""
    width, sep, height = text.strip().partition(":")
    try:
        ratio = float(width) / float(height) if sep else float(width)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"aspect must be W:H (e.g. 2:1) or a number, got {text!r}") from None
    if not 0.1 <= ratio <= 10:
        raise argparse.ArgumentTypeError(f"aspect (width / height) must be between 0.1 and 10, got {text!r}")
    return ratio


def render_shape(config: WriterConfig, aspect: float) -> tuple[int, int]:
    """(height, width) of the canvas scenes are drawn on: of the given aspect, and covering every output size so
    the writer only ever shrinks (sizes of the same aspect keep the whole scene)."""
    height = math.ceil(max(max(h, w / aspect) for w, h in map(size_dims, config.sizes)) - 1e-9)
    return height, max(1, round(height * aspect))


def run(args: argparse.Namespace) -> int:
    with exit_status_1():
        check_scene_options(args, OptionError)
        world = world_from_args(args)
        config = cli.writer_config_from_args(args)
        canvas = render_shape(config, args.aspect)
        if min(canvas) < 16:
            raise OptionError("the scenes' canvas must be >= 16 px a side for shapes to be drawn (raise --sizes)")
        render_size = canvas[0] if canvas[0] == canvas[1] else canvas
    tasks = plan_shards(range(args.count), config.shard_size)
    produce = functools.partial(
        produce_synthetic,
        world=world.to_dict(),
        seed=args.seed,
        style=args.style,
        size=render_size,
        captions_per_image=args.captions_per_image,
        style_word_p=args.style_word_p,
    )
    source = {
        "type": SOURCE_NAME,
        "count": args.count,
        "seed": args.seed,
        "style": args.style,
        "render_size": render_size if isinstance(render_size, int) else list(render_size),
        **({} if args.aspect == 1.0 else {"aspect": round(args.aspect, 4)}),
        "captions_per_image": args.captions_per_image,
        "style_word_p": args.style_word_p,
        "world": world.to_dict(),
    }
    return cli.run_build(args, tasks, produce, sources=[source], config=config)


def _vocabulary_text() -> str:
    d = DEFAULT_WORLD
    return (
        "vocabulary (a count N takes the first N of the list; or give comma-separated names):\n"
        f"  shapes:        {', '.join(SHAPE_NAMES)}   (default {', '.join(d.shapes)})\n"
        f"  colors:        {', '.join(SHAPE_COLOR_ORDER)}   (default {', '.join(d.colors)})\n"
        f"  backgrounds:   {', '.join(BACKGROUND_ORDER)}   (default {', '.join(d.backgrounds)})\n"
        f"  positions:     {', '.join(POSITIONS)}   (default all)\n"
        f"  shape sizes:   {', '.join(f'{k} ({v:.0%} of the side)' for k, v in SIZES.items())}   "
        f"(default {', '.join(d.sizes)})\n"
        "A shape never has its background's colour (nor gray on white, where it would blend with "
        "the halftone dots).\n\n"
        "example:\n"
        "  python -m data_pipeline synthetic --out data/shapes --count 20000 --sizes 32,128 "
        "--style comic --seed 1 --shapes 3 --colors 6 --backgrounds 4"
    )


DESCRIPTION = __doc__
FORMATTER = argparse.RawDescriptionHelpFormatter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _vocabulary_text()
    cli.add_writer_options(parser)
    add_scene_options(parser, "plain, or comic: black outlines and a halftone-dot background (default: plain)")
    parser.add_argument(
        "--aspect",
        type=parse_aspect,
        default=1.0,
        metavar="W:H",
        help="canvas aspect of the scenes, e.g. 2:1 (wide) or 1:2 (tall); positions are relative to the canvas. "
        "Pair it with --sizes of that shape (--aspect 2:1 --sizes 64x32) to keep whole scenes (default: 1:1)",
    )
    world = parser.add_argument_group("world (see the vocabulary below)")
    world.add_argument("--shapes", help="shape count or names")
    world.add_argument("--colors", help="shape colour count or names")
    world.add_argument("--backgrounds", help="background colour count or names")
    world.add_argument("--positions", help="position count or names")
    world.add_argument("--shape-sizes", help="shape size count or names")
    world.add_argument(
        "--position-jitter",
        type=float,
        default=DEFAULT_WORLD.position_jitter,
        help="random shift of the shape, fraction of the side (default: %(default)s)",
    )
    world.add_argument(
        "--size-jitter",
        type=float,
        default=DEFAULT_WORLD.size_jitter,
        help="random relative change of the shape size (default: %(default)s)",
    )
    add_caption_options(parser)
