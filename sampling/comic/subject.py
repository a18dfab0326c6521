"""Where a panel's subject is, read from the picture alone, so lettering can be placed off it.

The background is what the image's border ring shows: its median colour and, when the ring is two-toned
(halftone dots, a horizon), the median of the pixels far from that. Subject pixels are those far from every
background colour. An opening removes speckle (halftone dots, sampling noise), blobs too small to be a subject
are dropped, and what is left grows by a margin so lettering keeps some distance from it. A picture whose
"subject" fills most of it (noise, a busy scene) has none that lettering could avoid: the caller then falls back
to its default placement.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

RING_FRACTION = 1 / 16  # width of the border ring sampled for the background, as a share of the image side
MIN_DISTANCE = 48.0  # RGB distance from every background colour that makes a pixel part of the subject
SECOND_TONE_SHARE = 0.1  # the ring is two-toned when this share of it is far from its median colour
SPECKLE_FRACTION = 0.03  # opening kernel side, as a share of the image side
MIN_BLOB_FRACTION = 0.004  # smallest subject blob, as a share of the image area
MARGIN_FRACTION = 0.03  # the subject grows by this share of the image side
MAX_SUBJECT_SHARE = 0.5  # above this share of the image, there is no subject to keep clear of


def border_pixels(image: np.ndarray) -> np.ndarray:
    """(N, 3) pixels of the ring along an (H, W, 3) image's border (RING_FRACTION of its short side wide), where
    its background shows."""
    h, w = image.shape[:2]
    ring = max(1, round(min(h, w) * RING_FRACTION))
    return np.concatenate(
        [
            image[:ring].reshape(-1, 3),
            image[-ring:].reshape(-1, 3),
            image[:, :ring].reshape(-1, 3),
            image[:, -ring:].reshape(-1, 3),
        ]
    )


def _background_colours(rgb: np.ndarray) -> np.ndarray:
    border = border_pixels(rgb)
    first = np.median(border, axis=0)
    far = border[np.linalg.norm(border - first, axis=1) > MIN_DISTANCE]
    if len(far) > SECOND_TONE_SHARE * len(border):
        return np.stack([first, np.median(far, axis=0)])
    return first[None]


def _odd(n: float) -> int:
    return max(1, int(n) | 1)


def subject_mask(image: Image.Image, size: tuple[int, int]) -> np.ndarray | None:
    """Boolean (height, width) mask of the subject, scaled to `size` = (width, height); None when the picture is
    all background (an empty page) or all subject, so the caller falls back to its default placement."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = rgb.shape[:2]
    distance = np.min([np.linalg.norm(rgb - colour, axis=-1) for colour in _background_colours(rgb)], axis=0)
    mask = (distance > MIN_DISTANCE).astype(np.uint8)
    side = min(h, w)
    kernel = np.ones((_odd(side * SPECKLE_FRACTION),) * 2, np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= MIN_BLOB_FRACTION * h * w]
    if not keep:
        return None
    mask = np.isin(labels, keep).astype(np.uint8)
    margin = np.ones((_odd(2 * side * MARGIN_FRACTION + 1),) * 2, np.uint8)
    mask = cv2.dilate(mask, margin)
    if mask.mean() > MAX_SUBJECT_SHARE:
        return None
    return cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST).astype(bool)


class CoverageCounter:
    """Counts subject pixels inside page-coordinate boxes in O(1) each (a summed-area table). `mask` holds at least
    one subject pixel."""

    def __init__(self, mask: np.ndarray, origin: tuple[int, int]):
        self.origin = origin
        self._table = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        ys, xs = np.nonzero(mask)
        self.bounds = (
            origin[0] + int(xs.min()),
            origin[1] + int(ys.min()),
            origin[0] + int(xs.max()) + 1,
            origin[1] + int(ys.max()) + 1,
        )

    def covered(self, x0: int, y0: int, x1: int, y1: int) -> int:
        h, w = self._table.shape[0] - 1, self._table.shape[1] - 1
        ox, oy = self.origin
        x0, x1 = min(max(x0 - ox, 0), w), min(max(x1 - ox, 0), w)
        y0, y1 = min(max(y0 - oy, 0), h), min(max(y1 - oy, 0), h)
        if x1 <= x0 or y1 <= y0:
            return 0
        t = self._table
        return int(t[y1, x1] - t[y0, x1] - t[y1, x0] + t[y0, x0])
