"""Subject placement: a caption that says where its subject goes ("... in the top left ...") gets it there.

Why at sampling time: a convolutional UNet with text attention is (nearly) translation-equivariant, so where it
draws a single subject is decided by the starting noise, not by position words (the bundled base ignores them:
docs/quality/README.md). The layout is settled early, at high noise. So while the noise is high, after each step the
sampler finds the subject in the model's current prediction of the clean image (pixels that differ from the
border's colour), and rolls every image of its state so that the subject's bounding-box centre lands on the place
the caption names. The model then finishes drawing the same subject there.

The places are the synthetic world's five (corners and centre, `data_pipeline.synthetic.world.POSITIONS`), named by
its phrases ("in the top left", "at the upper right", "in the middle", ...). A caption that names none, or two
different ones, is left alone. It works for one subject on a plain background; a busy scene, whose "subject" fills
the picture, is left alone too.
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


def named_position(caption: str) -> str | None:
    """The one position `caption` names (a key of POSITIONS), or None when it names none or several."""
    text = caption.lower()
    found = {name for name, pattern in _PATTERNS.items() if pattern.search(text)}
    return found.pop() if len(found) == 1 else None


def subject_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, width, height) in pixels of the largest blob that differs from the border's colour, in an
    (H, W, 3) image with values in [-1, 1]; None when there is no such blob or it fills the picture."""
    h, w = image.shape[:2]
    distance = np.linalg.norm(image - np.median(border_pixels(image), axis=0), axis=-1)
    mask = (distance > SUBJECT_DISTANCE).astype(np.uint8)
    if not SUBJECT_MIN_SHARE * h * w <= mask.sum() <= SUBJECT_MAX_SHARE * h * w:
        return None
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    left, top, width, height, _ = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
    return int(left), int(top), int(width), int(height)


def _shift(target: float, start: int, extent: int, side: int) -> int:
    """Pixels to move a box [start, start + extent) along an axis of `side` pixels so that its centre lands on
    `target` (a fraction of the side), kept a pixel inside the canvas: rolled across an edge, the subject would
    wrap around and the model would draw it cut in two."""
    centre = min(max(target * side, extent / 2 + 1), side - extent / 2 - 1)
    return round(centre - (start + extent / 2))


class Placement:
    """A sampler's `steer`: moves each image's subject to its target, given as fractions (x, y) of the width and
    height, or None to leave that image alone."""

    def __init__(self, targets: Sequence[tuple[float, float] | None], num_timesteps: int):
        self.targets = list(targets)
        self.window = (STEER_UNTIL * num_timesteps, STEER_FROM * num_timesteps)

    @classmethod
    def from_captions(cls, captions: Sequence[str], num_timesteps: int) -> Placement | None:
        """The placement the captions ask for; None when none of them names a position."""
        names = [named_position(c) for c in captions]
        if not any(names):
            return None
        return cls([POSITIONS[n] if n else None for n in names], num_timesteps)

    def __call__(self, t: int, pred_xstart: torch.Tensor) -> torch.Tensor | None:
        if not self.window[0] <= t <= self.window[1]:
            return None
        images = pred_xstart.detach().float().permute(0, 2, 3, 1).cpu().numpy()
        h, w = images.shape[1:3]
        shifts = torch.zeros((len(images), 2), dtype=torch.long)
        for i, (image, target) in enumerate(zip(images, self.targets)):
            box = subject_box(image) if target is not None else None
            if box is not None:
                left, top, width, height = box
                shifts[i, 0] = _shift(target[1], top, height, h)
                shifts[i, 1] = _shift(target[0], left, width, w)
        return shifts if shifts.any() else None
