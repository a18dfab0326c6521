"""What a source hands the shard writer: its input cut into `ShardTask`s, one `Sample` or `Failure` per input
item, and the `WriterConfig` (sizes, encoding, split, shard size) every shard of a dataset is written with."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from data_pipeline import images


@dataclass
class Sample:
    """One captioned image handed to the writer by a source."""

    index: int  # position of the input item in ShardTask.items
    image: np.ndarray | bytes  # RGB uint8 (H, W, 3) array, or encoded image bytes
    caption: str
    captions: list[str] | None = None  # all known captions; defaults to [caption]
    source: str = ""
    url: str | None = None
    license: str | None = None
    attribution: str | None = None
    similarity: float | None = None
    attributes: dict[str, Any] | None = None
    width: int | None = None  # original size; filled from the image when None
    height: int | None = None
    group: str | None = None  # split group; samples sharing it land on the same side


@dataclass
class Failure:
    """An input item that produced no sample, with a short reason (counted in the stats)."""

    index: int
    reason: str
    detail: str = ""
    url: str | None = None


@dataclass
class ShardTask:
    shard_id: int
    items: Sequence[Any]

    def __len__(self) -> int:
        return len(self.items)


def plan_shards(items: Iterable[Any], shard_size: int, first_shard_id: int = 0) -> list[ShardTask]:
    """Cut input items into consecutive shard tasks of `shard_size` items."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    tasks: list[ShardTask] = []
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == shard_size:
            tasks.append(ShardTask(first_shard_id + len(tasks), chunk))
            chunk = []
    if chunk:
        tasks.append(ShardTask(first_shard_id + len(tasks), chunk))
    return tasks


def normalize_size(value: int | str) -> int | str:
    """One output size as the writer names it: an int for a square (`32`, also from "32" or "32x32"), the
    string "WxH" for a non-square shape ("48x32" = 48 wide, 32 high). The name is also its folder: DIR/48x32/."""
    text = str(value).strip().lower()
    width, sep, height = text.partition("x")
    try:
        dims = (int(width), int(height)) if sep else (int(text), int(text))
    except ValueError:
        raise ValueError(f"a size is N or WxH with positive integers, got {value!r}") from None
    if min(dims) < 1:
        raise ValueError(f"sizes must be positive, got {value!r}")
    return dims[0] if dims[0] == dims[1] else f"{dims[0]}x{dims[1]}"


def size_dims(size: int | str) -> tuple[int, int]:
    """(width, height) of a normalized size."""
    if isinstance(size, int):
        return size, size
    width, _, height = size.partition("x")
    return int(width), int(height)


def _size_order(size: int | str) -> tuple[int, int, int]:
    width, height = size_dims(size)
    return width * height, width, height


@dataclass(frozen=True)
class WriterConfig:
    out_dir: str
    # Squares as ints, other shapes as "WxH" strings (normalize_size); each is a shard set DIR/<size>/ holding
    # every sample (same keys), resized with resize_mode. Sorted by area: sizes[0] is the smallest.
    sizes: tuple[int | str, ...] = (64,)
    resize_mode: str = "center_crop"  # or "pad"
    image_format: str = "jpg"  # jpg, png or webp
    quality: int = 95
    val_fraction: float = 0.0
    shard_size: int = 1000
    min_image_side: int = 1  # smaller originals fail with image_too_small
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    pad_color: tuple[int, int, int] = (255, 255, 255)
    dedupe_distance: int | None = None  # pHash Hamming distance for near-duplicate removal; None: off

    def __post_init__(self):
        sizes = tuple(sorted({normalize_size(s) for s in self.sizes}, key=_size_order))
        if not sizes:
            raise ValueError(f"sizes must be positive integers, got {self.sizes!r}")
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "out_dir", os.fspath(self.out_dir))
        object.__setattr__(self, "pad_color", tuple(int(c) for c in self.pad_color))
        if self.resize_mode not in images.RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {images.RESIZE_MODES}, got {self.resize_mode!r}")
        if self.image_format not in images.IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {sorted(images.IMAGE_FORMATS)}, got {self.image_format!r}")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ValueError(f"val_fraction must be in [0, 1], got {self.val_fraction}")
        if self.shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        if self.dedupe_distance is not None and not 0 <= self.dedupe_distance <= 32:
            raise ValueError("dedupe_distance must be between 0 and 32 bits")

    @property
    def largest_side(self) -> int:
        """The longest side of any output size (what a source renders at, what JPEG drafts keep)."""
        return max(max(size_dims(s)) for s in self.sizes)

    @property
    def extension(self) -> str:
        return images.IMAGE_FORMATS[self.image_format].lstrip(".")

    def fingerprint(self) -> dict[str, Any]:
        """Settings that change shard content; a shard written with others is redone on resume."""
        d = asdict(self)
        del d["out_dir"], d["dedupe_distance"]
        d["sizes"] = list(self.sizes)
        d["pad_color"] = list(self.pad_color)
        return d
