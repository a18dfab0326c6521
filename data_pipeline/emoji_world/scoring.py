"""Score images against the emoji scenes they should show: the figures of an emoji-world benchmark."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .reader import read_emoji_scene
from .world import DEFAULT_EMOJI_WORLD, EmojiWorld

SCORED = ("count", "emoji", "position", "size", "background", "style")


def _facts(scene: dict) -> dict:
    """What one scene says, comparable between a read and its target whatever the subjects' order."""
    subjects = scene["subjects"]
    return {
        "count": len(subjects),
        "emoji": sorted(s["emoji"] for s in subjects),
        "position": sorted(s["position"] for s in subjects),
        "size": sorted(s["size"] for s in subjects),
        "subjects": sorted((s["emoji"], s["position"], s["size"]) for s in subjects),
        "background": scene["background"],
        "style": scene.get("style"),
    }


def read_emoji_scenes(images: Iterable, world: EmojiWorld = DEFAULT_EMOJI_WORLD) -> list[dict]:
    return [read_emoji_scene(image, world) for image in images]


def score_emoji_reads(reads: Sequence[dict], targets: Sequence[dict]) -> dict:
    """Compare reads with target scenes (dicts with `subjects` and `background`, as the world writes them).

    Returns n and the share of images with the right count of emoji, the right emoji (all of them), the right
    positions and the right sizes (as sets, whichever emoji stands there), the right background, the right style
    (when the targets name one), and `all`: every emoji at its own position and size, on the right background.
    """
    if len(reads) != len(targets):
        raise ValueError(f"{len(reads)} images but {len(targets)} targets")
    if not reads:
        raise ValueError("nothing to score")
    if any("subjects" not in t or "background" not in t for t in targets):
        raise ValueError("targets must name subjects and background (the attributes the emoji world writes)")
    pairs = [(_facts(r), _facts(t)) for r, t in zip(reads, targets)]
    result: dict = {"n": len(pairs)}
    for key in SCORED:
        if key == "style" and any(t["style"] is None for _, t in pairs):
            continue
        result[key] = float(np.mean([r[key] == t[key] for r, t in pairs]))
    content = ("subjects", "background")
    result["all"] = float(np.mean([all(r[k] == t[k] for k in content) for r, t in pairs]))
    return result


def score_emoji(images: Iterable, targets: Sequence[dict], world: EmojiWorld = DEFAULT_EMOJI_WORLD) -> dict:
    """Read every image and score it against its target (see score_emoji_reads)."""
    return score_emoji_reads(read_emoji_scenes(images, world), targets)
