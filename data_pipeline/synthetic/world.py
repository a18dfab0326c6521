"""The synthetic world's vocabulary and the seeded sampling of one scene's attributes.

A scene is one upright shape of a named colour, size and position on a plain background of
another named colour, drawn `plain` or `comic` (black outlines, halftone-dot background).
`World` says which names a dataset may use, so a small model can be trained on a learnable
subset; `DEFAULT_WORLD` is the documented default.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from .shapes import SHAPE_NAMES

# Named colours, RGB. Chosen far apart (smallest pairwise RGB distance ~85) and never dark, so
# black comic outlines and darker halftone dots stay distinguishable from every colour.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (245, 215, 30),
    "purple": (130, 50, 180),
    "orange": (245, 130, 20),
    "white": (245, 245, 240),
    "gray": (130, 130, 130),
    "cyan": (40, 200, 220),
    "pink": (245, 120, 190),
}

# Orders used when a world asks for "the first N" shape colours or backgrounds. The two lists
# start with disjoint sets, so small worlds never paint a shape in a background colour.
SHAPE_COLOR_ORDER = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan", "white", "gray")
BACKGROUND_ORDER = ("white", "gray", "cyan", "pink", "yellow", "blue", "green", "red", "purple", "orange")

# Where the shape's bounding-box centre goes, as fractions of the image side (x, y).
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "top_left": (0.27, 0.27),
    "top_right": (0.73, 0.27),
    "bottom_left": (0.27, 0.73),
    "bottom_right": (0.73, 0.73),
}

# Shape extents (bounding-box long side) as fractions of the image side.
SIZES: dict[str, float] = {"small": 0.3, "medium": 0.38, "large": 0.46}

STYLES = ("plain", "comic")

# The `source` of synthetic samples, and the type of its entry in a dataset manifest.
SOURCE_NAME = "synthetic"

# Comic backgrounds carry halftone dots in the background colour darkened by this factor.
HALFTONE_SHADE = 0.62
# A shape colour this close (RGB distance) to a background's halftone shade is never put on
# that background: the dots would read as the shape (only gray on white, with this palette).
MIN_HALFTONE_DISTANCE = 50.0


def halftone_color(background_rgb) -> tuple[int, int, int]:
    return tuple(int(round(c * HALFTONE_SHADE)) for c in background_rgb)


def colors_compatible(color: str, background: str) -> bool:
    """May a shape of `color` stand on `background`? Never the same colour, nor near its dots."""
    if color == background:
        return False
    dots = np.asarray(halftone_color(PALETTE[background]), np.float64)
    return float(np.linalg.norm(dots - PALETTE[color])) >= MIN_HALFTONE_DISTANCE


# Keep every shape at least this far (fraction of the side) inside the image after jitter.
EDGE_MARGIN = 0.02


@dataclass(frozen=True)
class World:
    """Which attribute values scenes may take, and how much they wiggle around the named values.

    The defaults are the default world: 4 shapes (circle, square, triangle, star), 6 shape
    colours (red, green, blue, yellow, purple, orange) on 4 backgrounds that are never shape
    colours (white, gray, cyan, pink), 5 positions, 2 sizes (small, large): 960 scenes up to
    jitter. Every shape in it stays recognisable at 32 px. A tiny model learns a smaller world
    sooner: fewer colours and backgrounds (e.g. make_world(shapes=3, colors=4, backgrounds=3)).
    """

    shapes: tuple[str, ...] = ("circle", "square", "triangle", "star")
    colors: tuple[str, ...] = SHAPE_COLOR_ORDER[:6]
    backgrounds: tuple[str, ...] = BACKGROUND_ORDER[:4]
    positions: tuple[str, ...] = tuple(POSITIONS)
    sizes: tuple[str, ...] = ("small", "large")
    # Uniform jitter of the centre, fraction of the image side (keeps positions unambiguous).
    position_jitter: float = 0.03
    # Uniform relative jitter of the extent (keeps sizes unambiguous).
    size_jitter: float = 0.06
    _pairs: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for attr, known in (
            ("shapes", SHAPE_NAMES),
            ("colors", PALETTE),
            ("backgrounds", PALETTE),
            ("positions", POSITIONS),
            ("sizes", SIZES),
        ):
            values = tuple(getattr(self, attr))
            object.__setattr__(self, attr, values)
            if not values:
                raise ValueError(f"world needs at least one of {attr}")
            unknown = [v for v in values if v not in known]
            if unknown:
                raise ValueError(f"unknown {attr}: {', '.join(unknown)}; known: {', '.join(known)}")
            if len(set(values)) != len(values):
                raise ValueError(f"repeated {attr}: {', '.join(values)}")
        if not 0 <= self.position_jitter <= 0.1:
            raise ValueError("position_jitter must be within [0, 0.1] so positions stay unambiguous")
        if not 0 <= self.size_jitter <= 0.1:
            raise ValueError("size_jitter must be within [0, 0.1] so sizes stay unambiguous")
        pairs = tuple((c, b) for c in self.colors for b in self.backgrounds if colors_compatible(c, b))
        if not pairs:
            raise ValueError("no shape colour may stand on any background (a shape must differ from its background)")
        object.__setattr__(self, "_pairs", pairs)

    @property
    def color_background_pairs(self) -> tuple[tuple[str, str], ...]:
        """All (shape colour, background) combinations the world allows (see colors_compatible)."""
        return self._pairs

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_pairs", None)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "World":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


DEFAULT_WORLD = World()


def pick_names(spec: str | int | None, order: tuple[str, ...], default: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Turn a user spec into names: None -> default, an int (or digit string) N -> the first N of
    `order`, or a comma-separated list of names (checked later by World)."""
    if spec is None or spec == "":
        return default
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        n = int(spec)
        if not 1 <= n <= len(order):
            raise ValueError(f"number of {what} must be between 1 and {len(order)}, got {n}")
        return order[:n]
    return tuple(
        name.strip().lower().replace(" ", "_").replace("-", "_") for name in str(spec).split(",") if name.strip()
    )


def make_world(
    shapes: str | int | None = None,
    colors: str | int | None = None,
    backgrounds: str | int | None = None,
    positions: str | int | None = None,
    sizes: str | int | None = None,
    position_jitter: float = DEFAULT_WORLD.position_jitter,
    size_jitter: float = DEFAULT_WORLD.size_jitter,
) -> World:
    """Build a World from counts or comma-separated names, each defaulting to DEFAULT_WORLD's."""
    d = DEFAULT_WORLD
    return World(
        shapes=pick_names(shapes, SHAPE_NAMES, d.shapes, "shapes"),
        colors=pick_names(colors, SHAPE_COLOR_ORDER, d.colors, "colours"),
        backgrounds=pick_names(backgrounds, BACKGROUND_ORDER, d.backgrounds, "backgrounds"),
        positions=pick_names(positions, tuple(POSITIONS), d.positions, "positions"),
        sizes=pick_names(sizes, tuple(SIZES), d.sizes, "sizes"),
        position_jitter=position_jitter,
        size_jitter=size_jitter,
    )


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for scene `index` of a run seeded `seed`: independent of how the run is
    split into shards or processes, so every shard can be rebuilt alone."""
    return np.random.default_rng([int(seed), int(index)])


def sample_attributes(world: World, rng: np.random.Generator, style: str = "plain", aspect: float = 1.0) -> dict:
    """Draw one scene: named attributes plus the exact geometry. `x` is a fraction of the canvas width, `y` of
    its height, `diameter` of its short side; `aspect` (width / height) is the canvas the scene is drawn for, so
    the shape stays inside it. A square scene draws the same numbers whatever the aspect code path."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if not 0.1 <= aspect <= 10:
        raise ValueError(f"aspect (width / height) must be between 0.1 and 10, got {aspect!r}")
    shape = world.shapes[rng.integers(len(world.shapes))]
    color, background = world.color_background_pairs[rng.integers(len(world.color_background_pairs))]
    position = world.positions[rng.integers(len(world.positions))]
    size = world.sizes[rng.integers(len(world.sizes))]
    diameter = SIZES[size] * (1 + rng.uniform(-world.size_jitter, world.size_jitter))
    cx, cy = np.asarray(POSITIONS[position]) + rng.uniform(-world.position_jitter, world.position_jitter, 2)
    # The shape's half extent as a fraction of each axis: the diameter is relative to the short side.
    half_x = diameter / 2 * min(1.0, 1.0 / aspect)
    half_y = diameter / 2 * min(1.0, aspect)
    attributes = {
        "shape": shape,
        "color": color,
        "size": size,
        "position": position,
        "background": background,
        "style": style,
        "x": round(float(np.clip(cx, half_x + EDGE_MARGIN, 1 - half_x - EDGE_MARGIN)), 4),
        "y": round(float(np.clip(cy, half_y + EDGE_MARGIN, 1 - half_y - EDGE_MARGIN)), 4),
        "diameter": round(float(diameter), 4),
    }
    if aspect != 1.0:
        attributes["aspect"] = round(float(aspect), 4)
    return attributes


def manifest_world(path: str, source: str) -> dict:
    """The world dict recorded by the `source` command in a dataset's manifest (path: the folder or manifest.json)."""
    if os.path.isdir(path):
        path = os.path.join(path, "manifest.json")
    with open(path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    worlds = [s["world"] for s in manifest.get("sources", []) if s.get("type") == source and "world" in s]
    if not worlds:
        raise ValueError(f"{path}: not a {source} dataset (no {source} source with a world)")
    return worlds[0]


def world_from_manifest(path: str) -> World:
    """The World a synthetic dataset was built with (path: the dataset folder or its manifest.json)."""
    return World.from_dict(manifest_world(path, SOURCE_NAME))
