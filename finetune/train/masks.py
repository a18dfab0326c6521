"""Random inpainting masks for training: erased rectangles and free-form brush strokes (1 = known, 0 = erased)."""

from __future__ import annotations

import math

import cv2
import numpy as np

MASK_KINDS = ("mixed", "rect", "strokes")


def _rectangles(size: int, rng: np.random.Generator) -> np.ndarray:
    erased = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        h = max(1, int(size * rng.uniform(0.2, 0.7)))
        w = max(1, int(size * rng.uniform(0.2, 0.7)))
        top = int(rng.integers(0, size - h + 1))
        left = int(rng.integers(0, size - w + 1))
        erased[top : top + h, left : left + w] = 1
    return erased


def _strokes(size: int, rng: np.random.Generator) -> np.ndarray:
    erased = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        x, y = rng.uniform(0, size, 2)
        angle = rng.uniform(0, 2 * math.pi)
        width = max(1, int(round(size * rng.uniform(0.05, 0.15))))
        for _ in range(int(rng.integers(3, 9))):
            angle += rng.uniform(-math.pi / 3, math.pi / 3)
            length = size * rng.uniform(0.1, 0.35)
            nx = float(np.clip(x + length * math.cos(angle), 0, size - 1))
            ny = float(np.clip(y + length * math.sin(angle), 0, size - 1))
            cv2.line(erased, (int(x), int(y)), (int(nx), int(ny)), 1, width)
            cv2.circle(erased, (int(nx), int(ny)), width // 2, 1, -1)
            x, y = nx, ny
    return erased


def random_mask(size: int, rng: np.random.Generator, kind: str = "mixed") -> np.ndarray:
    """A size x size float32 mask, 1 where pixels are known and 0 where the model must fill in."""
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    if kind == "mixed":
        kind = "rect" if rng.random() < 0.5 else "strokes"
    erased = _rectangles(size, rng) if kind == "rect" else _strokes(size, rng)
    if erased.all():  # keep some context: never erase everything
        erased[: size // 4] = 0
    if not erased.any():
        erased[size // 4 : size // 2, size // 4 : size // 2] = 1
    return (1 - erased).astype(np.float32)
