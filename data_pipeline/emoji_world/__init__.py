"""The emoji world, both ways: captioned scenes of OpenMoji emoji (the shapes world's grammar with real art as its
subjects), and reading scenes back from images (the evaluator). OpenCV, numpy and Pillow; the art comes from the
`openmoji` extra and is CC BY-SA 4.0.

    from data_pipeline.emoji_world import DEFAULT_EMOJI_WORLD, make_emoji_scene, read_emoji_scene, score_emoji
    image, captions, attributes = make_emoji_scene(0, seed=1, size=64)
    read_emoji_scene(image)              # {"subjects": [{"emoji": ..., "position": ..., "size": ...}], ...}
    score_emoji([image], [attributes])   # {"n": 1, "count": 1.0, "emoji": 1.0, ..., "all": 1.0}
"""

from .captions import canonical_emoji_caption, make_emoji_caption
from .reader import read_emoji_scene
from .render import render_emoji_scene
from .scenes import make_emoji_scene
from .scoring import read_emoji_scenes, score_emoji, score_emoji_reads
from .vocabulary import CAST_HEXCODES, CAST_NAMES, COMIC_CAST
from .world import (
    DEFAULT_EMOJI_WORLD,
    SIZES,
    EmojiWorld,
    emoji_world_from_manifest,
    make_emoji_world,
    sample_emoji_attributes,
)

__all__ = [
    "CAST_HEXCODES",
    "CAST_NAMES",
    "COMIC_CAST",
    "DEFAULT_EMOJI_WORLD",
    "SIZES",
    "EmojiWorld",
    "canonical_emoji_caption",
    "emoji_world_from_manifest",
    "make_emoji_caption",
    "make_emoji_scene",
    "make_emoji_world",
    "read_emoji_scene",
    "read_emoji_scenes",
    "render_emoji_scene",
    "sample_emoji_attributes",
    "score_emoji",
    "score_emoji_reads",
]
