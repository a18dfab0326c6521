"""Score images against the scenes they should show: the figures of the quality benchmark."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .reader import read_scene
from .world import DEFAULT_WORLD, World

# The content a caption asks for; "all_three" is right when all of these are.
CONTENT_ATTRIBUTES = ("shape", "color", "background")
SCORED_ATTRIBUTES = ("shape", "color", "background", "position", "size", "style")


def read_scenes(images: Iterable, world: World = DEFAULT_WORLD) -> list[dict]:
    """read_scene for each image (RGB arrays, a (N, H, W, 3) batch, PIL images or paths)."""
    return [read_scene(image, world) for image in images]


def score_reads(reads: Sequence[dict], targets: Sequence[dict]) -> dict:
    """Compare reads with target attributes (dicts naming at least shape, color, background).

    Returns n; the accuracy of each attribute the targets name (shape, color, background,
    position, size, style); all_three: shape, colour and background all right; style_rate:
    share of images read as comic (whatever the targets say).
    """
    if len(reads) != len(targets):
        raise ValueError(f"{len(reads)} images but {len(targets)} targets")
    if not reads:
        raise ValueError("nothing to score")
    missing = [a for a in CONTENT_ATTRIBUTES if any(a not in t for t in targets)]
    if missing:
        raise ValueError(f"targets must name {', '.join(CONTENT_ATTRIBUTES)}; missing: {', '.join(missing)}")
    result: dict = {"n": len(reads)}
    for attr in SCORED_ATTRIBUTES:
        if all(attr in t for t in targets):
            result[attr] = float(np.mean([r[attr] == t[attr] for r, t in zip(reads, targets)]))
    result["all_three"] = float(
        np.mean([all(r[a] == t[a] for a in CONTENT_ATTRIBUTES) for r, t in zip(reads, targets)])
    )
    result["style_rate"] = float(np.mean([r["style"] == "comic" for r in reads]))
    return result


def score(images: Iterable, targets: Sequence[dict], world: World = DEFAULT_WORLD) -> dict:
    """Read every image and score it against its target (see score_reads)."""
    return score_reads(read_scenes(images, world), targets)
