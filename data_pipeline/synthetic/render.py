"""Draw a scene (see world.sample_attributes) as an RGB image with OpenCV.

All geometry is a fraction of the image, so a scene looks the same at every size, and an image
rendered large and shrunk with area interpolation (what the shard writer does) matches one
rendered small. Edges are anti-aliased with OpenCV's sub-pixel drawing.

Canvases may be non-square (`size=(height, width)`): a shape's centre `x` is a fraction of the
width and `y` of the height (so "top left" is the canvas's own top-left corner on any aspect),
and its `diameter`, outlines and halftone pitch are fractions of the short side, so shapes keep
their proportions.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .shapes import unit_polygon
from .world import PALETTE, STYLES, halftone_color

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT

# Comic outlines lie outside the fill (so the fill looks the same in both styles); their width
# as a fraction of the image side (about 1.5 px at 32, 2.5 px at 64).
OUTLINE_FRACTION = 0.04
# Halftone: a staggered grid of dots, HALFTONE_CELLS per side, dots of this radius (fraction of
# the cell pitch), in the background's halftone colour (world.halftone_color).
HALFTONE_CELLS = 8
HALFTONE_DOT_RADIUS = 0.27
OUTLINE_COLOR = (0, 0, 0)


def outline_stroke(size: int) -> int:
    """Width of the stroke drawn centred on the edge; the fill then covers its inner half."""
    return max(2, int(round(2 * OUTLINE_FRACTION * size)))


def canvas_dims(size) -> tuple[int, int]:
    """(height, width) of a canvas given as a side (square) or a (height, width) pair."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def shape_points(shape: str, x: float, y: float, diameter: float, size) -> np.ndarray:
    """Polygon in OpenCV's fixed-point pixel coordinates (pixel centres at integers); `size` is a side or
    (height, width)."""
    height, width = canvas_dims(size)
    short = min(height, width)
    pts = unit_polygon(shape) * diameter * short + (x * width, y * height) - 0.5
    return np.round(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)


@lru_cache(maxsize=256)
def background_canvas(background: str, style: str, size) -> np.ndarray:
    height, width = canvas_dims(size)
    rgb = PALETTE[background]
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = rgb
    if style == "comic":
        pitch = min(height, width) / HALFTONE_CELLS
        radius = int(round(HALFTONE_DOT_RADIUS * pitch * _ONE))
        dot = halftone_color(rgb)
        for row in range(int(np.ceil(height / pitch - 1e-9)) + 1):
            offset = 0.0 if row % 2 == 0 else pitch / 2
            cy = (row + 0.5) * pitch - 0.5
            for col in range(-1, int(np.ceil(width / pitch - 1e-9)) + 1):
                cx = (col + 0.5) * pitch + offset - 0.5
                center = (int(round(cx * _ONE)), int(round(cy * _ONE)))
                cv2.circle(canvas, center, radius, dot, -1, cv2.LINE_AA, _SHIFT)
    canvas.setflags(write=False)
    return canvas


def supersampling(size: int) -> int:
    """Small images are drawn 2-4x larger and shrunk: OpenCV's anti-aliasing alone smears
    halftone dots of 2 px into a checkerboard."""
    return 4 if size < 128 else 2 if size < 256 else 1


def _checked_dims(size) -> tuple[int, int]:
    try:
        height, width = canvas_dims(size)
    except (TypeError, ValueError):
        height = width = -1
    if isinstance(size, bool) or min(height, width) < 8:
        raise ValueError(f"image size must be an integer >= 8 or a (height, width) pair of them, got {size!r}")
    return height, width


def render(attributes: dict, size) -> np.ndarray:
    """Render a scene as a uint8 RGB array: (size, size, 3) for an int, (height, width, 3) for a pair."""
    height, width = _checked_dims(size)
    k = supersampling(min(height, width))
    image = _draw(attributes, (height * k, width * k))
    if k > 1:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image


def _draw(attributes: dict, dims: tuple[int, int]) -> np.ndarray:
    style = attributes.get("style", "plain")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    image = background_canvas(attributes["background"], style, dims).copy()
    pts = shape_points(attributes["shape"], attributes["x"], attributes["y"], attributes["diameter"], dims)
    if style == "comic":
        cv2.polylines(image, [pts], True, OUTLINE_COLOR, outline_stroke(min(dims)), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(image, [pts], PALETTE[attributes["color"]], cv2.LINE_AA, _SHIFT)
    return image


def shape_template(shape: str, x: float, y: float, diameter: float, size) -> np.ndarray:
    """Float32 coverage in [0, 1] of the shape's fill as `render` draws it, of the canvas's shape."""
    height, width = canvas_dims(size)
    k = supersampling(min(height, width))
    mask = np.zeros((height * k, width * k), np.uint8)
    cv2.fillPoly(mask, [shape_points(shape, x, y, diameter, (height * k, width * k))], 255, cv2.LINE_AA, _SHIFT)
    if k > 1:
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA)
    return mask.astype(np.float32) / 255.0
