"""The emoji world's vocabulary and the seeded sampling of one scene: the shapes world's grammar (named
positions, sizes and background colours, plain or comic style) with OpenMoji emoji as its subjects.

A scene holds one emoji, or (a share `pair_p` of scenes) two emoji at two different corners. Sizes are the side
of the emoji's design square as a fraction of the image side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from data_pipeline.synthetic.world import BACKGROUND_ORDER, PALETTE, POSITIONS, STYLES, manifest_world, pick_names

from .vocabulary import CAST_HEXCODES, CAST_NAMES

SOURCE_NAME = "emoji_scenes"
SIZES: dict[str, float] = {"small": 0.36, "medium": 0.46, "large": 0.56}
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
# Two emoji at neighbouring corners must not overlap: a pair uses the world's sizes up to this one.
PAIR_MAX_SIZE = "medium"


@dataclass(frozen=True)
class EmojiWorld:
    """Which emoji, backgrounds, positions and sizes scenes may take. The default: the whole comic cast (94
    emoji), 6 backgrounds, the 5 positions, 2 sizes, and a third of the scenes with two emoji."""

    emoji: tuple[str, ...] = CAST_NAMES
    backgrounds: tuple[str, ...] = BACKGROUND_ORDER[:6]
    positions: tuple[str, ...] = tuple(POSITIONS)
    sizes: tuple[str, ...] = ("small", "large")
    pair_p: float = 0.3
    position_jitter: float = 0.03
    size_jitter: float = 0.05

    def __post_init__(self):
        for attr, known in (
            ("emoji", CAST_HEXCODES),
            ("backgrounds", PALETTE),
            ("positions", POSITIONS),
            ("sizes", SIZES),
        ):
            values = tuple(getattr(self, attr))
            object.__setattr__(self, attr, values)
            unknown = [v for v in values if v not in known]
            if not values or unknown or len(set(values)) != len(values):
                raise ValueError(
                    f"{attr} must be distinct names from: {', '.join(known)}"
                    + (f" (unknown: {', '.join(unknown)})" if unknown else "")
                )
        if not 0 <= self.pair_p <= 1:
            raise ValueError("pair_p must be within [0, 1]")
        if not 0 <= self.position_jitter <= 0.05 or not 0 <= self.size_jitter <= 0.08:
            raise ValueError("position_jitter must be within [0, 0.05] and size_jitter within [0, 0.08]")

    @property
    def corners(self) -> tuple[str, ...]:
        return tuple(p for p in self.positions if p in CORNERS)

    @property
    def pair_sizes(self) -> tuple[str, ...]:
        fitting = tuple(s for s in self.sizes if SIZES[s] <= SIZES[PAIR_MAX_SIZE])
        return fitting or (min(self.sizes, key=SIZES.get),)

    def names_size(self, subjects: int) -> bool:
        """Whether captions of a scene of this many subjects name sizes: only where such scenes come in several sizes
        (pairs come in the pair sizes only, so their captions never say "small")."""
        return len(self.sizes if subjects == 1 else self.pair_sizes) > 1

    @property
    def has_pairs(self) -> bool:
        return self.pair_p > 0 and len(self.corners) >= 2

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "EmojiWorld":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


DEFAULT_EMOJI_WORLD = EmojiWorld()


def _pick_emoji(spec: str | int | None) -> tuple[str, ...]:
    """None: the whole cast; N: its first N; or comma-separated cast names (spaces kept, case ignored)."""
    if isinstance(spec, str) and not spec.strip().isdigit():
        return tuple(name.strip().lower() for name in spec.split(",") if name.strip())
    return pick_names(spec, CAST_NAMES, DEFAULT_EMOJI_WORLD.emoji, "emoji")


def make_emoji_world(
    emoji: str | int | None = None,
    backgrounds: str | int | None = None,
    positions: str | int | None = None,
    sizes: str | int | None = None,
    pair_p: float = DEFAULT_EMOJI_WORLD.pair_p,
) -> EmojiWorld:
    """An EmojiWorld from counts (the first N) or comma-separated names, each defaulting to the default world's."""
    d = DEFAULT_EMOJI_WORLD
    return EmojiWorld(
        emoji=_pick_emoji(emoji),
        backgrounds=pick_names(backgrounds, BACKGROUND_ORDER, d.backgrounds, "backgrounds"),
        positions=pick_names(positions, tuple(POSITIONS), d.positions, "positions"),
        sizes=pick_names(sizes, tuple(SIZES), d.sizes, "sizes"),
        pair_p=pair_p,
    )


def _subject(world: EmojiWorld, rng: np.random.Generator, name: str, position: str, size: str) -> dict:
    extent = SIZES[size] * (1 + rng.uniform(-world.size_jitter, world.size_jitter))
    cx, cy = np.asarray(POSITIONS[position]) + rng.uniform(-world.position_jitter, world.position_jitter, 2)
    lo, hi = extent / 2, 1 - extent / 2
    return {
        "emoji": name,
        "hexcode": CAST_HEXCODES[name],
        "position": position,
        "size": size,
        "x": round(float(np.clip(cx, lo, hi)), 4),
        "y": round(float(np.clip(cy, lo, hi)), 4),
        "extent": round(float(extent), 4),
    }


def sample_emoji_attributes(world: EmojiWorld, rng: np.random.Generator, style: str = "plain") -> dict:
    """Draw one scene: background, style and its subjects (one or two), each with its exact geometry."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    background = world.backgrounds[rng.integers(len(world.backgrounds))]
    if world.has_pairs and rng.random() < world.pair_p:
        names = [world.emoji[i] for i in rng.choice(len(world.emoji), size=2, replace=len(world.emoji) < 2)]
        places = [world.corners[i] for i in rng.choice(len(world.corners), size=2, replace=False)]
        sizes = [world.pair_sizes[rng.integers(len(world.pair_sizes))] for _ in range(2)]
    else:
        names = [world.emoji[rng.integers(len(world.emoji))]]
        places = [world.positions[rng.integers(len(world.positions))]]
        sizes = [world.sizes[rng.integers(len(world.sizes))]]
    subjects = [_subject(world, rng, n, p, s) for n, p, s in zip(names, places, sizes)]
    return {"subjects": subjects, "background": background, "style": style}


def emoji_world_from_manifest(path: str) -> EmojiWorld:
    """The EmojiWorld an emoji-scenes dataset was built with (the dataset folder or its manifest.json)."""
    return EmojiWorld.from_dict(manifest_world(path, SOURCE_NAME))
