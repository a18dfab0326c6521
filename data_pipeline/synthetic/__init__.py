"""The synthetic world, both ways: render captioned scenes of coloured shapes, and read scenes
back from images (the evaluator of generated pictures). OpenCV and numpy only.

    from data_pipeline.synthetic import DEFAULT_WORLD, make_scene, read_scene, score
    image, captions, attributes = make_scene(0, seed=1, size=32, style="comic")
    read_scene(image)            # {"shape": ..., "color": ..., "style": "comic", ...}
    score([image], [attributes]) # {"n": 1, "shape": 1.0, ..., "all_three": 1.0, "style_rate": 1.0}
"""

from .captions import canonical_caption, make_caption
from .reader import read_scene
from .render import render
from .scenes import make_scene
from .scoring import read_scenes, score, score_reads
from .shapes import SHAPE_NAMES
from .world import (
    DEFAULT_WORLD,
    PALETTE,
    POSITIONS,
    SIZES,
    STYLES,
    World,
    make_world,
    sample_attributes,
    sample_rng,
    world_from_manifest,
)

__all__ = [
    "DEFAULT_WORLD",
    "PALETTE",
    "POSITIONS",
    "SHAPE_NAMES",
    "SIZES",
    "STYLES",
    "World",
    "canonical_caption",
    "make_caption",
    "make_scene",
    "make_world",
    "read_scene",
    "read_scenes",
    "render",
    "sample_attributes",
    "sample_rng",
    "score",
    "score_reads",
    "world_from_manifest",
]
