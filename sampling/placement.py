"""Subject placement: a caption that says where its subject goes ("... in the top left ...") gets it there, and one
that names two places ("a cat in the top left and a robot in the bottom right") gets a subject at each.

Why at sampling time: a convolutional UNet with text attention is (nearly) translation-equivariant, so where it
draws a subject is decided by the starting noise, not by position words (the bundled base ignores them:
docs/quality/README.md). The layout is settled early, at high noise. So while the noise is high, after each step the
sampler finds the subject in the model's current prediction of the clean image (pixels that differ from the
border's colour), and rolls every image of its state so that the subject's bounding-box centre lands on the place
the caption names. The model then finishes drawing the same subject there.

Two places: the two largest subjects are matched to the two places (whichever pairing moves them less) and each is
moved on its own: its box (plus a pixel) trades pixels with the box of the same size at its place, or, where the
two overlap, the rectangle covering both is rolled. Either way the state's pixels are only rearranged, so the noise
stays noise. A move that would disturb the other subject waits for a later step. Which subject each becomes is up to
the model; for captions of the form "<A> <place> and <B> <place> ..." regional guidance (`sampling.regions`) has
each half of the picture guided by its own subject's caption.

The places are the synthetic world's five (corners and centre, `data_pipeline.synthetic.world.POSITIONS`), named by
its phrases ("in the top left", "at the upper right", "in the middle", ...). A caption that names none, or more
than two, is left alone. It works for subjects on a plain background; a busy scene, whose "subject" fills the
picture, is left alone too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from data_pipeline.synthetic.captions import POSITION_PHRASES, POSITION_SHORT
from data_pipeline.synthetic.world import POSITIONS

from .comic.subject import border_pixels

# Steering happens while the step's noise level (its original timestep as a share of the process) is in this
# range: below its top the prediction already shows a subject, above its bottom the layout is still open.
STEER_FROM = 0.9
STEER_UNTIL = 0.35
SUBJECT_DISTANCE = 0.38  # distance from the border colour (RGB in [-1, 1]; 0.38 = 48 of 255) that marks a subject
SUBJECT_MIN_SHARE = 0.005  # fewer subject pixels than this share of the image: nothing to place yet
SUBJECT_MAX_SHARE = 0.6  # more: a busy picture, no single subject to move


def _phrase_pattern() -> dict[str, re.Pattern]:
    patterns = {}
    for name in POSITIONS:
        phrases = sorted({*POSITION_PHRASES[name], *POSITION_SHORT[name]}, key=len, reverse=True)
        alternatives = "|".join(re.escape(p).replace(r"\ ", r"[\s-]+").replace(r"\-", r"[\s-]+") for p in phrases)
        patterns[name] = re.compile(rf"(?<![a-z])(?:{alternatives})(?![a-z])")
    return patterns


_PATTERNS = _phrase_pattern()


def position_spans(caption: str) -> list[tuple[int, int, str]]:
    """Where `caption` names each distinct position: (start, end, key of POSITIONS) of its first phrase for it, in
    the caption's order."""
    text = caption.lower()
    found = [(m.start(), m.end(), name) for name, pattern in _PATTERNS.items() if (m := pattern.search(text))]
    return sorted(found)


def named_positions(caption: str) -> list[str]:
    """The distinct positions `caption` names (keys of POSITIONS), in the order it names them."""
    return [name for _, _, name in position_spans(caption)]


def named_position(caption: str) -> str | None:
    """The one position `caption` names, or None when it names none or several."""
    names = named_positions(caption)
    return names[0] if len(names) == 1 else None


def placement_names(caption: str) -> list[str]:
    """The places placement moves the caption's subjects to: one or two positions, else none."""
    names = named_positions(caption)
    return names if len(names) <= 2 else []


Box = tuple[int, int, int, int]  # left, top, width, height in pixels


def subject_boxes(image: np.ndarray, limit: int = 1) -> list[Box]:
    """The boxes of the `limit` largest blobs that differ from the border's colour (largest first), in an (H, W, 3)
    image with values in [-1, 1]; none when nothing stands out or the blobs fill the picture. Blobs smaller than a
    subject's minimum are not subjects."""
    h, w = image.shape[:2]
    distance = np.linalg.norm(image - np.median(border_pixels(image), axis=0), axis=-1)
    mask = (distance > SUBJECT_DISTANCE).astype(np.uint8)
    if not SUBJECT_MIN_SHARE * h * w <= mask.sum() <= SUBJECT_MAX_SHARE * h * w:
        return []
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    order = 1 + np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")
    chosen = order[:1].tolist() + [i for i in order[1:limit] if stats[i, cv2.CC_STAT_AREA] >= SUBJECT_MIN_SHARE * h * w]
    return [tuple(int(v) for v in stats[i, :4]) for i in chosen]


def subject_box(image: np.ndarray) -> Box | None:
    """The box of the largest blob that differs from the border's colour (see `subject_boxes`), or None."""
    boxes = subject_boxes(image, 1)
    return boxes[0] if boxes else None


def _shift(target: float, start: int, extent: int, side: int) -> int:
    """Pixels to move a box [start, start + extent) along an axis of `side` pixels so that its centre lands on
    `target` (a fraction of the side), kept a pixel inside the canvas: rolled across an edge, the subject would
    wrap around and the model would draw it cut in two."""
    centre = min(max(target * side, extent / 2 + 1), side - extent / 2 - 1)
    return round(centre - (start + extent / 2))


def _box_shift(box: Box, target: tuple[float, float], h: int, w: int) -> tuple[int, int]:
    left, top, width, height = box
    return _shift(target[1], top, height, h), _shift(target[0], left, width, w)


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _rows_cols(box: Box) -> tuple[slice, slice]:
    left, top, width, height = box
    return slice(top, top + height), slice(left, left + width)


def _move_one(sources: np.ndarray, box: Box, dy: int, dx: int, keep: Box) -> Box | None:
    """Move the pixels of `box` (grown by a pixel, inside the canvas) by (dy, dx) in the source map, unless that
    would touch `keep`; returns where the grown box went, or None when nothing moved."""
    h, w = sources.shape
    left, top = max(box[0] - 1, 0), max(box[1] - 1, 0)
    right, bottom = min(box[0] + box[2] + 1, w), min(box[1] + box[3] + 1, h)
    dy = min(max(dy, -top), h - bottom)  # the moved box stays on the canvas
    dx = min(max(dx, -left), w - right)
    if dy == dx == 0:
        return None
    here = (left, top, right - left, bottom - top)
    there = (left + dx, top + dy, right - left, bottom - top)
    if _overlap(here, there):  # roll the rectangle covering both: the subject lands there, the rest wraps behind it
        span = (min(left, left + dx), min(top, top + dy), right - left + abs(dx), bottom - top + abs(dy))
        if _overlap(span, keep):
            return None
        rows, cols = _rows_cols(span)
        sources[rows, cols] = np.roll(sources[rows, cols], (dy, dx), axis=(0, 1))
    else:  # trade places with the box-sized patch at the destination
        if _overlap(here, keep) or _overlap(there, keep):
            return None
        (r1, c1), (r2, c2) = _rows_cols(here), _rows_cols(there)
        sources[r1, c1], sources[r2, c2] = sources[r2, c2].copy(), sources[r1, c1].copy()
    return there


def pair_sources(image: np.ndarray, targets: Sequence[tuple[float, float]]) -> np.ndarray | None:
    """The source map [H, W] (flat indices) that moves the two largest subjects of `image` to the two targets
    (the pairing that moves them less), or None when there are not two subjects or nothing moves."""
    boxes = subject_boxes(image, 2)
    if len(boxes) < 2:
        return None
    h, w = image.shape[:2]

    def distance(box: Box, target: tuple[float, float]) -> float:
        return float(np.hypot(*_box_shift(box, target, h, w)))

    (a, b), (ta, tb) = boxes, targets
    if distance(a, ta) + distance(b, tb) > distance(a, tb) + distance(b, ta):
        ta, tb = tb, ta
    sources = np.arange(h * w).reshape(h, w)
    a_now = _move_one(sources, a, *_box_shift(a, ta, h, w), keep=b)  # b's pixels stay where they are
    b_now = _move_one(sources, b, *_box_shift(b, tb, h, w), keep=a_now or a)
    return sources if a_now or b_now else None


class Placement:
    """A sampler's `steer`: moves each image's subjects to its targets, given as fractions (x, y) of the width and
    height: one target (the subject) or two (the two largest subjects); none leaves that image alone."""

    def __init__(self, targets: Sequence[Sequence[tuple[float, float]]], num_timesteps: int):
        self.targets = [list(t) for t in targets]
        self.window = (STEER_UNTIL * num_timesteps, STEER_FROM * num_timesteps)

    @classmethod
    def from_captions(cls, captions: Sequence[str], num_timesteps: int) -> Placement | None:
        """The placement the captions ask for; None when none of them names a position."""
        names = [placement_names(c) for c in captions]
        if not any(names):
            return None
        return cls([[POSITIONS[n] for n in found] for found in names], num_timesteps)

    def __call__(self, t: int, pred_xstart: torch.Tensor) -> torch.Tensor | None:
        if not self.window[0] <= t <= self.window[1]:
            return None
        images = pred_xstart.detach().float().permute(0, 2, 3, 1).cpu().numpy()
        h, w = images.shape[1:3]
        sources = np.tile(np.arange(h * w), (len(images), 1))
        moved = False
        for i, (image, targets) in enumerate(zip(images, self.targets)):
            if len(targets) == 1 and (box := subject_box(image)) is not None:
                dy, dx = _box_shift(box, targets[0], h, w)
                if dy or dx:  # the whole image rolls: the subject and the noise around it move together
                    sources[i] = np.roll(sources[i].reshape(h, w), (dy, dx), axis=(0, 1)).ravel()
                    moved = True
            elif len(targets) == 2 and (pair := pair_sources(image, targets)) is not None:
                sources[i] = pair.ravel()
                moved = True
        return torch.from_numpy(sources) if moved else None
