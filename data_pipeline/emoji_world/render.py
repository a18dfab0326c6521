"""Draw an emoji scene (see world.sample_emoji_attributes) as an RGB image: OpenMoji glyphs composited on a plain
or halftone background. Glyphs are resized from one master rendering per emoji with area interpolation, so a
scene looks the same at every size and costs a resize and a blend per subject."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from data_pipeline.sources.openmoji_art import master_glyph
from data_pipeline.synthetic.render import background_canvas, supersampling  # the shapes world's canvases


@lru_cache(maxsize=512)
def _glyph_pyramid(hexcode: str) -> tuple[np.ndarray, ...]:
    """The master glyph and its successive halvings down to 32 px: a small glyph is resized from the smallest
    level at least twice its side, which is as sharp as resizing the master and many times faster."""
    levels = [master_glyph(hexcode)]
    while levels[-1].shape[0] >= 64:
        side = levels[-1].shape[0] // 2
        levels.append(cv2.resize(levels[-1], (side, side), interpolation=cv2.INTER_AREA))
    return tuple(levels)


@lru_cache(maxsize=2048)
def scaled_glyph(hexcode: str, side: int) -> np.ndarray:
    """Premultiplied RGBA float32 (side, side, 4) of the emoji's design square (cached: treat as read-only)."""
    source = next(level for level in reversed(_glyph_pyramid(hexcode)) if level.shape[0] >= min(2 * side, 256))
    glyph = cv2.resize(source, (side, side), interpolation=cv2.INTER_AREA)
    glyph.setflags(write=False)
    return glyph


def paste_glyph(canvas: np.ndarray, glyph: np.ndarray, left: int, top: int) -> None:
    """Blend a premultiplied glyph into a float32 RGB canvas (0-255) in place, clipped to the canvas."""
    h, w = canvas.shape[:2]
    side = glyph.shape[0]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if x0 >= x1 or y0 >= y1:
        return
    part = glyph[y0 - top : y1 - top, x0 - left : x1 - left]
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - part[..., 3:]
    region += part[..., :3] * 255.0


def subject_box(subject: dict, size: int) -> tuple[int, int, int]:
    """(left, top, side) in pixels of the subject's design square."""
    side = max(1, int(round(subject["extent"] * size)))
    left = int(round(subject["x"] * size - side / 2))
    top = int(round(subject["y"] * size - side / 2))
    return left, top, side


@lru_cache(maxsize=64)
def scene_canvas(background: str, style: str, size: int) -> np.ndarray:
    """The background as float32 RGB (0-255), drawn as the shapes world draws it (halftone dots supersampled and
    shrunk), so a scene rendered large and shrunk by the shard writer matches one rendered small. Read-only."""
    k = supersampling(size)
    canvas = background_canvas(background, style, size * k)
    if k > 1:
        canvas = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    canvas = canvas.astype(np.float32)
    canvas.setflags(write=False)
    return canvas


def render_emoji_scene(attributes: dict, size: int) -> np.ndarray:
    """Render a scene as a (size, size, 3) uint8 RGB array."""
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"image size must be an integer >= 16, got {size!r}")
    canvas = scene_canvas(attributes["background"], attributes.get("style", "plain"), int(size)).copy()
    for subject in attributes["subjects"]:
        left, top, side = subject_box(subject, size)
        paste_glyph(canvas, scaled_glyph(subject["hexcode"], side), left, top)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
