"""Read an emoji scene back from an image: the evaluator of pictures drawn for the emoji world.

OpenCV and numpy only, analysis by synthesis against the world's own glyphs (images above 64 px are shrunk to
64 px first):

1. background: per-channel median of a border ring, named by the nearest world background; the style is comic
   when a clear share of the ring is in the background's halftone shade or the ring follows the world's dot grid;
2. foreground: pixels that neither the background colour nor the world's halftone canvas (sharp or blurred)
   explains, specks removed;
3. one emoji or two: two when a run of empty columns (or rows) in the middle band of the image splits the
   foreground into two substantial parts (pairs stand at different corners, so a gap separates them);
4. which emoji: every candidate glyph is scaled so its ink box (as seen on that background) matches the part's,
   drawn on the detected background at that place, and compared with the image under a slight blur (mean
   absolute difference around the part); the closest few are then placed to the pixel, the best names the
   emoji, and its design square gives the size and position.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from data_pipeline.sources.openmoji_art import glyph_on
from data_pipeline.synthetic.reader import as_rgb_uint8
from data_pipeline.synthetic.world import HALFTONE_SHADE, PALETTE, POSITIONS

from .render import paste_glyph, scaled_glyph, scene_canvas
from .vocabulary import CAST_HEXCODES
from .world import DEFAULT_EMOJI_WORLD, SIZES, EmojiWorld

# A pixel is foreground when it is this far (RGB) from everything the background explains.
FOREGROUND_DISTANCE = 45.0
# Side at which glyphs' ink boxes are measured (fine enough for images up to several hundred pixels).
INK_BOX_RESOLUTION = 128
# Share of the border ring in the halftone shade, or correlation of the ring with the world's halftone grid,
# above which the scene reads as comic.
HALFTONE_THRESHOLD = 0.1
GRID_MATCH_THRESHOLD = 0.35
# Blurs (sigma, pixels) of the halftone canvas that also count as background: generators draw soft dots.
CANVAS_BLURS = (1.0, 2.0)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# A gap splits the foreground into two emoji only inside this band of the image and when each side holds at
# least this share of the foreground.
GAP_BAND = (0.25, 0.75)
MIN_PART_SHARE = 0.1
# Larger images are shrunk to this side before reading: glyphs are told apart there already, at a fraction of the
# cost, and the halftone grid and blur settings stay those the reader is tuned on.
READ_SIZE = 64
# Sigma (pixels) of the blur applied to both sides of every comparison (see _soften).
COMPARE_BLUR = 0.8
# Candidates (best first by the ink-box fit) whose placement is then searched to the pixel.
REFINED_CANDIDATES = 4
# Foreground blobs smaller than this share of the image are noise.
MIN_BLOB_FRACTION = 0.0015


@lru_cache(maxsize=4096)
def ink_box(hexcode: str, background: str) -> tuple[float, float, float, float]:
    """(left, top, right, bottom), as fractions of the design square, of the part of the glyph that `_foreground`
    finds on `background` (parts in the background's own colour do not count, as in the image)."""
    rgb = PALETTE[background]
    drawn = glyph_on(hexcode, INK_BOX_RESOLUTION, rgb).astype(np.float32)
    ys, xs = np.nonzero(~_near(drawn, np.asarray(rgb, np.float32)))
    if not len(xs):
        return 0.0, 0.0, 1.0, 1.0
    side = INK_BOX_RESOLUTION
    return xs.min() / side, ys.min() / side, (xs.max() + 1) / side, (ys.max() + 1) / side


def _border(pix: np.ndarray) -> np.ndarray:
    ring = max(1, pix.shape[0] // 16)
    return np.concatenate(
        [
            pix[:ring].reshape(-1, 3),
            pix[-ring:].reshape(-1, 3),
            pix[ring:-ring, :ring].reshape(-1, 3),
            pix[ring:-ring, -ring:].reshape(-1, 3),
        ]
    )


def _distance_to_segment(pix: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    axis = b - a
    t = np.clip((pix - a) @ axis / max(float(axis @ axis), 1.0), 0.0, 1.0)
    return np.linalg.norm(pix - a - t[..., None] * axis, axis=-1)


def _near(pix: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.linalg.norm(pix - colour, axis=-1) < FOREGROUND_DISTANCE


@lru_cache(maxsize=256)
def _comic_canvases(background: str, size: int) -> tuple[np.ndarray, ...]:
    """The world's halftone canvas as drawn, and as a blurry generator would draw it (read-only)."""
    canvas = scene_canvas(background, "comic", size)
    blurred = [cv2.GaussianBlur(canvas, (0, 0), sigma) for sigma in CANVAS_BLURS]
    for b in blurred:
        b.setflags(write=False)
    return (canvas, *blurred)


def _grid_match(pix: np.ndarray, background: str) -> float:
    """Correlation of the border ring's brightness with the world's halftone grid (softened): high when the
    image shows the world's dots, even blurred ones too faint to be told from the background by colour."""
    seen = _border(pix) @ LUMA
    grid = _border(_comic_canvases(background, pix.shape[0])[1]) @ LUMA
    seen, grid = seen - seen.mean(), grid - grid.mean()
    return float(seen @ grid / max(np.sqrt((seen @ seen) * (grid @ grid)), 1e-6))


def _background_pixels(pix: np.ndarray, background: str, style: str, *colours: np.ndarray) -> np.ndarray:
    """Pixels that the background explains: near one of its colours, near the world's own halftone canvas at
    that place, sharp or blurred (the grid never moves), or, when the image's dots are elsewhere, near any mix of
    the background with its halftone shade (which also swallows thin outlines: only then is that price paid)."""
    near = np.zeros(pix.shape[:2], bool)
    for colour in colours:
        near |= _near(pix, colour)
    if style == "comic":
        off_grid = True
        for canvas in _comic_canvases(background, pix.shape[0]):
            near |= np.linalg.norm(pix - canvas, axis=-1) < FOREGROUND_DISTANCE
            off_grid &= float(np.median(_border(np.abs(pix - canvas)).max(axis=1))) > FOREGROUND_DISTANCE / 2
        if off_grid:
            for colour in colours:
                near |= _distance_to_segment(pix, colour, colour * HALFTONE_SHADE) < FOREGROUND_DISTANCE
    return near


def _foreground(pix: np.ndarray, background: str, style: str, *colours: np.ndarray) -> np.ndarray:
    """Foreground pixels, specks (noise, stray dots) removed."""
    mask = (~_background_pixels(pix, background, style, *colours)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < MIN_BLOB_FRACTION * mask.size)
    keep = np.ones(count, bool)
    keep[0] = False
    keep[small[small > 0]] = False
    return keep[labels]


def _gap(profile: np.ndarray) -> tuple[int, int] | None:
    """(width, index) of the widest run of empty lines in the middle band that leaves a substantial part of the
    foreground on each side; None when there is none."""
    size, total = len(profile), float(profile.sum())
    lo, hi = int(GAP_BAND[0] * size), int(GAP_BAND[1] * size)
    best = None
    run = 0
    for i in range(lo, hi + 1):
        run = run + 1 if profile[i] == 0 else 0
        if run and min(profile[:i].sum(), profile[i:].sum()) >= MIN_PART_SHARE * total:
            if best is None or run > best[0]:
                best = (run, i)
    return best


def split_subjects(fg: np.ndarray, pairs: bool) -> list[np.ndarray]:
    """One foreground mask per emoji: the whole foreground, or its two sides of the widest gap."""
    if not fg.any():
        return []
    gaps = [(gap, axis) for axis in (0, 1) if (gap := _gap(fg.sum(axis=axis))) is not None] if pairs else []
    if not gaps:
        return [fg]
    (_, cut), axis = max(gaps)
    first, second = fg.copy(), fg.copy()
    if axis == 0:  # axis 0 sums rows: the gap is a run of empty columns
        first[:, cut:], second[:, :cut] = False, False
    else:
        first[cut:], second[:cut] = False, False
    return [first, second]


def _candidate_fit(hexcode: str, background: str, box) -> tuple[int, int, int]:
    """(left, top, side) in pixels of the glyph's design square when its ink box fills `box`."""
    x0, y0, x1, y1 = box
    bx0, by0, bx1, by1 = ink_box(hexcode, background)
    side = (x1 - x0 + y1 - y0) / ((bx1 - bx0) + (by1 - by0))
    return int(round(x0 - bx0 * side)), int(round(y0 - by0 * side)), max(1, int(round(side)))


def _placement_error(hexcode: str, placement, canvas: np.ndarray, observed: np.ndarray, window) -> float:
    """Mean absolute difference, inside `window`, between the image and the glyph drawn there on the canvas."""
    left, top, side = placement
    wx0, wy0, wx1, wy1 = window
    drawn = canvas[wy0:wy1, wx0:wx1].copy()
    paste_glyph(drawn, scaled_glyph(hexcode, side), left - wx0, top - wy0)
    return float(np.abs(_soften(drawn) - observed).mean())


def _soften(pix: np.ndarray) -> np.ndarray:
    """A slight blur applied to the image and to every candidate before they are compared: a pixel's shift or a
    generator's soft edges then cost little, while shapes and colours still decide."""
    return cv2.GaussianBlur(pix, (3, 3), COMPARE_BLUR)


def _refined(hexcode: str, placement, canvas, observed, window) -> tuple[float, tuple[int, int, int]]:
    """The best placement within one pixel of `placement` (position and side): ink boxes measured on a few
    pixels are off by about that much."""
    left, top, side = placement
    candidates = [
        (left + dx, top + dy, side + ds)
        for ds in (-1, 0, 1)
        if side + ds >= 1
        for dx in (-1, 0, 1)
        for dy in (-1, 0, 1)
    ]
    return min((_placement_error(hexcode, c, canvas, observed, window), c) for c in candidates)


def read_subject(pix: np.ndarray, mask: np.ndarray, scene: tuple[str, str, np.ndarray], world: EmojiWorld) -> dict:
    """Name the emoji in one foreground part by drawing every candidate in its place on the scene's canvas
    (scene: background name, style, float32 canvas); the closest few are then placed to the pixel."""
    background, _, canvas = scene
    size = pix.shape[0]
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    pad = max(1, size // 32)
    window = (max(0, box[0] - pad), max(0, box[1] - pad), min(size, box[2] + pad), min(size, box[3] + pad))
    observed = _soften(pix[window[1] : window[3], window[0] : window[2]])
    first = sorted(
        (
            _placement_error(
                CAST_HEXCODES[n], _candidate_fit(CAST_HEXCODES[n], background, box), canvas, observed, window
            ),
            n,
        )
        for n in world.emoji
    )
    refined = [
        (*_refined(CAST_HEXCODES[n], _candidate_fit(CAST_HEXCODES[n], background, box), canvas, observed, window), n)
        for _, n in first[:REFINED_CANDIDATES]
    ]
    error, (left, top, side), name = min(refined)
    x, y, extent = (left + side / 2) / size, (top + side / 2) / size, side / size
    return {
        "emoji": name,
        "hexcode": CAST_HEXCODES[name],
        "position": min(world.positions, key=lambda p: (POSITIONS[p][0] - x) ** 2 + (POSITIONS[p][1] - y) ** 2),
        "size": min(world.sizes, key=lambda s: abs(np.log(SIZES[s] / extent))),
        "x": round(x, 4),
        "y": round(y, 4),
        "extent": round(extent, 4),
        "match_error": round(error, 2),
    }


def read_emoji_scene(image, world: EmojiWorld = DEFAULT_EMOJI_WORLD) -> dict:
    """Read one image (RGB array, PIL image or path; one larger than READ_SIZE is shrunk to it). Returns the
    scene's attributes as the world writes them (subjects ordered top to bottom, left to right; each with emoji,
    position, size and its geometry), background, style, and the measurements behind them."""
    rgb = as_rgb_uint8(image)
    if rgb.shape[0] != rgb.shape[1]:  # the emoji world is square only (the shapes world reads any aspect)
        raise ValueError(f"expected a square image, got {rgb.shape[1]}x{rgb.shape[0]}")
    if rgb.shape[0] > READ_SIZE:  # e.g. an upsampler's 256 px output: read as the 64 px scene it shows
        rgb = cv2.resize(rgb, (READ_SIZE, READ_SIZE), interpolation=cv2.INTER_AREA)
    size = rgb.shape[0]
    pix = rgb.astype(np.float32)
    border = _border(pix)
    bg_obs = np.median(border, axis=0)
    background = min(world.backgrounds, key=lambda n: float(np.sum((np.asarray(PALETTE[n]) - bg_obs) ** 2)))
    dots = bg_obs * HALFTONE_SHADE
    halftone = float(np.mean(np.linalg.norm(border - dots, axis=1) < np.linalg.norm(border - bg_obs, axis=1)))
    grid = _grid_match(pix, background)
    style = "comic" if halftone >= HALFTONE_THRESHOLD or grid >= GRID_MATCH_THRESHOLD else "plain"
    canvas = scene_canvas(background, style, size)
    fg = _foreground(pix, background, style, bg_obs, np.asarray(PALETTE[background], np.float32))
    scene = (background, style, canvas)
    subjects = [read_subject(pix, part, scene, world) for part in split_subjects(fg, world.has_pairs)]
    subjects.sort(key=lambda s: (round(s["y"] * 2), s["x"]))
    return {
        "subjects": subjects,
        "background": background,
        "style": style,
        "background_rgb": [round(float(v), 1) for v in bg_obs],
        "halftone_score": round(halftone, 4),
        "grid_match": round(grid, 4),
    }
