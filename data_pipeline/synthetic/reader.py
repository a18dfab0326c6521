"""Read a synthetic scene back from an image: the evaluator of generated pictures.

The reader inverts `render` with OpenCV and numpy only, and is built to tolerate what a small
diffusion model produces (noise, colours drifting off the palette, stray blobs):

1. background: per-channel median of a border ring, named by the nearest world background;
2. shape colour: pixels are labelled with the nearest of {background, its halftone shade,
   black outline, the world's shape colours}; the colour whose largest connected blob of
   confidently labelled pixels is biggest wins (any labelled pixels when none is confident);
3. shape: that blob's soft coverage is compared (soft IoU) with each world shape's template
   scaled to the same area and centred on the same centroid (analysis by synthesis);
4. size and position: nearest named size and position of the best template's geometry;
5. style: share of the blob's edge with a dark (outline) pixel next to it, and share of
   background pixels in the halftone shade.
"""

from __future__ import annotations

from os import PathLike

import cv2
import numpy as np

from ..images import read_image_file
from .render import OUTLINE_FRACTION, shape_template
from .shapes import unit_area, unit_centroid
from .world import DEFAULT_WORLD, HALFTONE_SHADE, PALETTE, POSITIONS, SIZES, World, colors_compatible

# A pixel counts as confidently one colour when it is within this RGB distance of it.
CONFIDENT_DISTANCE = 70.0
# Style decision: outline share of the blob edge, or halftone share of the background.
OUTLINE_THRESHOLD = 0.5
HALFTONE_THRESHOLD = 0.1
# Fewest confident pixels, as a fraction of the image, for a blob to count as a shape.
MIN_BLOB_FRACTION = 0.004


def as_rgb_uint8(image) -> np.ndarray:
    """Accept an RGB array (H, W, 3) — uint8, or float in [0, 1] — a PIL image or an image path."""
    if isinstance(image, (str, PathLike)):
        image, _ = read_image_file(image)
    elif hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {arr.shape}")
    if min(arr.shape[:2]) < 16:
        raise ValueError(f"image too small to read: {arr.shape[1]}x{arr.shape[0]} px (need >= 16 on each side)")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if arr.min() < -0.01 or arr.max() > 1.01:
            raise ValueError("float images must be in [0, 1] (convert [-1, 1] model outputs first)")
        return np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {arr.dtype}")


def _nearest(rgb: np.ndarray, names) -> str:
    return min(names, key=lambda n: float(np.sum((np.asarray(PALETTE[n], np.float32) - rgb) ** 2)))


def _luma(rgb) -> np.ndarray:
    return np.asarray(rgb, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _nearest_size(diameter: float, names) -> str:
    return min(names, key=lambda n: abs(np.log(SIZES[n] / diameter)))


def read_scene(image, world: World = DEFAULT_WORLD) -> dict:
    """Read one image, square or not. Returns the named attributes (shape, color, size, position, background,
    style; None where nothing was found) and the measurements behind them: `x` and `y` as fractions of the width
    and height, `diameter` of the short side (as `render` draws them)."""
    rgb = as_rgb_uint8(image)
    size = rgb.shape[:2]
    pix = rgb.astype(np.float32)
    border, bg_obs, background = _read_background(pix, world)
    result = _empty_reading(background, bg_obs)
    colors, centres, label, confident = _label_pixels(pix, border, bg_obs, background, world)
    best = _shape_blob(label, confident, len(colors), size)
    if best is None:
        result.update(_style_scores(pix, bg_obs, None, None, size))
        return result
    _, k, blob = best
    result["color"] = colors[k]
    c_obs, cover, fitted = _fit_shape(pix, blob, centres, world)
    result.update(fitted)
    result.update(_style_scores(pix, bg_obs, c_obs, cover > 0.5, size))
    return result


def _read_background(pix: np.ndarray, world: World) -> tuple[np.ndarray, np.ndarray, str]:
    """The border ring's pixels, their median colour and the world's background nearest to it."""
    ring = max(1, min(pix.shape[:2]) // 16)
    border = np.concatenate(
        [
            pix[:ring].reshape(-1, 3),
            pix[-ring:].reshape(-1, 3),
            pix[ring:-ring, :ring].reshape(-1, 3),
            pix[ring:-ring, -ring:].reshape(-1, 3),
        ]
    )
    bg_obs = np.median(border, axis=0)
    return border, bg_obs, _nearest(bg_obs, world.backgrounds)


def _empty_reading(background: str, bg_obs: np.ndarray) -> dict:
    return {
        "shape": None,
        "color": None,
        "size": None,
        "position": None,
        "background": background,
        "background_rgb": [round(float(v), 1) for v in bg_obs],  # median of the border ring
        "style": "plain",
        "x": None,
        "y": None,
        "diameter": None,
        "shape_score": 0.0,
        "outline_score": 0.0,
        "halftone_score": 0.0,
    }


def _label_pixels(pix: np.ndarray, border: np.ndarray, bg_obs: np.ndarray, background: str, world: World):
    """(shape colours, class centres, per-pixel nearest class, per-pixel confidence).

    Classes 0-2 are background-like (background, halftone dots, outline black). The halftone class only exists
    when the border shows dots, so a plain image's shape is never taken for them."""
    colors = [c for c in world.colors if colors_compatible(c, background)] or list(world.colors)
    dots = bg_obs * HALFTONE_SHADE
    has_dots = float(np.mean(np.linalg.norm(border - dots, axis=1) < np.linalg.norm(border - bg_obs, axis=1))) > 0.05
    centres = np.array(
        [bg_obs, dots if has_dots else bg_obs, (0.0, 0.0, 0.0)] + [PALETTE[c] for c in colors], np.float32
    )
    dist = np.linalg.norm(pix[:, :, None, :] - centres[None, None], axis=-1)
    return colors, centres, dist.argmin(axis=-1), dist.min(axis=-1) < CONFIDENT_DISTANCE


def _shape_blob(label: np.ndarray, confident: np.ndarray, count: int, size: tuple[int, int]):
    """The largest blob of one shape colour, big enough to be a shape; None when there is none."""
    least = MIN_BLOB_FRACTION * size[0] * size[1]
    best = _largest_blob(label, confident, count, first=3)
    if best is None or best[0] < least:
        # Colours drifted far off the palette: fall back to plain nearest-colour labels.
        best = _largest_blob(label, np.ones_like(confident), count, first=3)
    if best is None or best[0] < least:
        return None
    return best


def _fit_shape(pix: np.ndarray, blob: np.ndarray, centres: np.ndarray, world: World):
    """(observed shape colour, per-pixel coverage, the fitted shape's fields): the world's shape whose template,
    placed at the blob's centroid with its coverage mass, overlaps the coverage best."""
    size = pix.shape[:2]
    height, width = size
    region = cv2.dilate(blob.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    c_obs = np.median(pix[blob], axis=0)
    cover = _coverage(pix, c_obs, centres[:3]) * region
    mass = float(cover.sum())
    ys, xs = np.mgrid[0:height, 0:width]
    cx = float((cover * (xs + 0.5)).sum() / mass) / width
    cy = float((cover * (ys + 0.5)).sum() / mass) / height

    best_shape, best_score, best_geom = None, -1.0, None
    for shape in world.shapes:
        template, geom = _fit_template(shape, cx, cy, mass, size)
        score = float(np.minimum(template, cover).sum() / max(np.maximum(template, cover).sum(), 1e-6))
        if score > best_score:
            best_shape, best_score, best_geom = shape, score, geom
    x, y, diameter = best_geom
    fitted = {
        "shape": best_shape,
        "shape_score": round(best_score, 4),
        "x": round(x, 4),
        "y": round(y, 4),
        "diameter": round(diameter, 4),
        "size": _nearest_size(diameter, world.sizes),
        "position": min(world.positions, key=lambda p: (POSITIONS[p][0] - x) ** 2 + (POSITIONS[p][1] - y) ** 2),
    }
    return c_obs, cover, fitted


def _largest_blob(label: np.ndarray, keep: np.ndarray, count: int, first: int):
    """(pixel count, colour index, mask) of the largest 8-connected blob of kept pixels labelled
    first + k, over the colours k < count; None when there is none."""
    best = None
    for k in range(count):
        mask = ((label == first + k) & keep).astype(np.uint8)
        if not mask.any():
            continue
        _, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        j = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[j, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, k, comp == j)
    return best


def _coverage(pix: np.ndarray, color: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Per-pixel share of `color`, modelling each pixel as a mix of it with whichever of
    `others` (background, halftone shade, outline black) explains the pixel best."""
    best_cover = np.zeros(pix.shape[:2], np.float32)
    best_resid = np.full(pix.shape[:2], np.inf, np.float32)
    for other in others:
        axis = color - other
        norm2 = max(float(axis @ axis), 1.0)
        a = np.clip((pix - other) @ axis / norm2, 0.0, 1.0)
        resid = np.linalg.norm(pix - other - a[..., None] * axis, axis=-1)
        better = resid < best_resid
        best_cover[better], best_resid[better] = a[better], resid[better]
    return best_cover


def _fit_template(shape: str, cx: float, cy: float, mass: float, size: tuple[int, int]):
    """The shape's template with the observed centroid and coverage mass: sized from the
    polygon's area, then corrected once by the drawn template's own mass. The centroid is in
    fractions of each axis, the diameter of the short side (the unit centroid offset scales with it)."""
    height, width = size
    short = min(height, width)
    diameter = float(np.sqrt(mass / (short * short * unit_area(shape))))
    ox, oy = unit_centroid(shape)

    def placed(diameter: float) -> tuple[float, float]:
        return cx - ox * diameter * short / width, cy - oy * diameter * short / height

    for _ in range(2):
        x, y = placed(diameter)
        template = shape_template(shape, x, y, diameter, size)
        diameter *= float(np.sqrt(mass / max(float(template.sum()), 1e-6)))
    x, y = placed(diameter)
    return shape_template(shape, x, y, diameter, size), (x, y, diameter)


def _style_scores(pix, bg_obs, c_obs, fill, size) -> dict:
    luma = _luma(pix)
    ref = _luma(bg_obs) if c_obs is None else min(_luma(bg_obs), _luma(c_obs))
    # Darker than both the background and the shape colour by a clear margin: mixing the two
    # (anti-aliasing, blur) can never produce such a pixel, a black outline does.
    dark = (luma < min(0.6 * float(ref), float(ref) - 35.0)).astype(np.uint8)
    height, width = size
    reach = max(1, int(round(1.5 * OUTLINE_FRACTION * min(height, width))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    near_dark = cv2.dilate(dark, kernel).astype(bool)

    outline = 0.0
    if fill is not None and fill.any():
        fill8 = fill.astype(np.uint8)
        edge = cv2.dilate(fill8, np.ones((3, 3), np.uint8)).astype(bool) & ~fill
        outline = float(near_dark[edge].mean()) if edge.any() else 0.0
        keep_out = cv2.dilate(fill8 | dark, kernel, iterations=2).astype(bool)
    else:
        keep_out = near_dark
    away = ~keep_out
    halftone = 0.0
    if away.sum() >= 0.05 * height * width:
        sample = pix[away]
        d_bg = np.linalg.norm(sample - bg_obs, axis=-1)
        d_dot = np.linalg.norm(sample - bg_obs * HALFTONE_SHADE, axis=-1)
        halftone = float((d_dot < d_bg).mean())
    style = "comic" if outline >= OUTLINE_THRESHOLD or halftone >= HALFTONE_THRESHOLD else "plain"
    return {"outline_score": round(outline, 4), "halftone_score": round(halftone, 4), "style": style}
