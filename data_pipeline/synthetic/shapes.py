"""Outlines of the synthetic world's shapes as polygons in unit coordinates.

Every shape is centred on (0, 0) and fits a box of side 1 (its "diameter"), points up, and is
never rotated: a tiny diffusion model learns upright shapes far faster, and the reader can
then match templates without searching over angles. The renderer and the reader both draw
from these polygons, so what is rendered is exactly what is matched.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def _regular(n: int, radius: float, phase: float) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _fit_unit_box(points: np.ndarray) -> np.ndarray:
    """Scale and centre a polygon so its bounding box is centred on 0 with its long side 1."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (points - (lo + hi) / 2) / float((hi - lo).max())


def _circle() -> np.ndarray:
    return _regular(96, 0.5, 0.0)


def _square() -> np.ndarray:
    # A slightly smaller square than the box keeps its area close to the circle's at equal size.
    h = 0.44
    return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])


def _triangle() -> np.ndarray:
    # Apex up (image y grows downwards).
    return _fit_unit_box(_regular(3, 1.0, -np.pi / 2))


def _star() -> np.ndarray:
    outer = _regular(5, 1.0, -np.pi / 2)
    inner = _regular(5, 0.5, -np.pi / 2 + np.pi / 5)
    pts = np.empty((10, 2))
    pts[0::2], pts[1::2] = outer, inner
    return _fit_unit_box(pts)


def _diamond() -> np.ndarray:
    return np.array([[0.0, -0.5], [0.36, 0.0], [0.0, 0.5], [-0.36, 0.0]])


def _cross() -> np.ndarray:
    a, b = 0.5, 0.17
    return np.array(
        [
            [-b, -a],
            [b, -a],
            [b, -b],
            [a, -b],
            [a, b],
            [b, b],
            [b, a],
            [-b, a],
            [-b, b],
            [-a, b],
            [-a, -b],
            [-b, -b],
        ]
    )


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return _fit_unit_box(np.stack([x, y], axis=1))


_BUILDERS = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "diamond": _diamond,
    "cross": _cross,
    "heart": _heart,
}

SHAPE_NAMES: tuple[str, ...] = tuple(_BUILDERS)


@lru_cache(maxsize=None)
def unit_polygon(shape: str) -> np.ndarray:
    """The shape's polygon, float64 array (N, 2) of (x, y) in the unit box (read-only)."""
    if shape not in _BUILDERS:
        raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPE_NAMES)}")
    pts = _BUILDERS[shape]().astype(np.float64)
    pts.setflags(write=False)
    return pts


@lru_cache(maxsize=None)
def unit_area(shape: str) -> float:
    """Area of the unit polygon (shoelace formula)."""
    x, y = unit_polygon(shape).T
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


@lru_cache(maxsize=None)
def unit_perimeter(shape: str) -> float:
    pts = unit_polygon(shape)
    return float(np.linalg.norm(pts - np.roll(pts, -1, axis=0), axis=1).sum())


@lru_cache(maxsize=None)
def unit_centroid(shape: str) -> tuple[float, float]:
    """Area centroid of the unit polygon relative to its bounding-box centre."""
    x, y = unit_polygon(shape).T
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area6 = 3 * cross.sum()
    return float(((x + xn) * cross).sum() / area6), float(((y + yn) * cross).sum() / area6)
