"""Random inpainting masks for training: erased rectangles and free-form brush strokes (1 = known, 0 = erased)."""

from __future__ import annotations

import math

import cv2
import numpy as np

MASK_KINDS = ("mixed", "rect", "strokes")


def _rectangles(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    erased = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        h = max(1, int(height * rng.uniform(0.2, 0.7)))
        w = max(1, int(width * rng.uniform(0.2, 0.7)))
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        erased[top : top + h, left : left + w] = 1
    return erased


def _strokes(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    erased = np.zeros((height, width), np.uint8)
    short = min(height, width)
    for _ in range(int(rng.integers(1, 5))):
        x, y = rng.uniform(0, (width, height))
        angle = rng.uniform(0, 2 * math.pi)
        stroke = max(1, int(round(short * rng.uniform(0.05, 0.15))))
        for _ in range(int(rng.integers(3, 9))):
            angle += rng.uniform(-math.pi / 3, math.pi / 3)
            length = short * rng.uniform(0.1, 0.35)
            nx = float(np.clip(x + length * math.cos(angle), 0, width - 1))
            ny = float(np.clip(y + length * math.sin(angle), 0, height - 1))
            cv2.line(erased, (int(x), int(y)), (int(nx), int(ny)), 1, stroke)
            cv2.circle(erased, (int(nx), int(ny)), stroke // 2, 1, -1)
            x, y = nx, ny
    return erased


def random_mask(size: int | tuple[int, int], rng: np.random.Generator, kind: str = "mixed") -> np.ndarray:
    """A float32 mask of `size` (a side, or (height, width)), 1 where pixels are known and 0 where the model must
    fill in."""
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    height, width = (size, size) if isinstance(size, int) else size
    if kind == "mixed":
        kind = "rect" if rng.random() < 0.5 else "strokes"
    erased = _rectangles(height, width, rng) if kind == "rect" else _strokes(height, width, rng)
    if erased.all():  # keep some context: never erase everything
        erased[: height // 4] = 0
    if not erased.any():
        erased[height // 4 : height // 2, width // 4 : width // 2] = 1
    return (1 - erased).astype(np.float32)
