"""Where a dataset's files are and what they are called: sample keys, shard and stats paths, the train/val split,
and which shards are complete (their stats file, written last, records the settings and inputs they were made
with)."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from data_pipeline.fsutil import atomic_write_json
from data_pipeline.shards.plan import ShardTask, WriterConfig

SPLITS = ("train", "val")


def key_digits(shard_size: int) -> int:
    return max(4, len(str(shard_size - 1)))


def make_key(shard_id: int, index: int, shard_size: int) -> str:
    """img2dataset-style key: shard id followed by the zero-padded index, e.g. 000000123."""
    digits = key_digits(shard_size)
    if not 0 <= index < 10**digits:
        raise ValueError(f"index {index} out of range for shard_size {shard_size}")
    return f"{shard_id * 10**digits + index:0{5 + digits}d}"


def shard_name(shard_id: int) -> str:
    return f"{shard_id:05d}"


def tar_path(out_dir: str, size: int, shard_id: int) -> str:
    return os.path.join(out_dir, str(size), f"{shard_name(shard_id)}.tar")


def stats_path(out_dir: str, size: int, shard_id: int) -> str:
    return os.path.join(out_dir, str(size), f"{shard_name(shard_id)}_stats.json")


def assign_split(group: str, val_fraction: float) -> str:
    """'val' for a stable, hash-chosen `val_fraction` of groups, else 'train'."""
    if val_fraction <= 0:
        return "train"
    digest = hashlib.sha256(group.encode("utf-8")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def content_group(image: np.ndarray | bytes) -> str:
    """Default split group: a digest of the exact image content."""
    h = hashlib.sha256()
    if isinstance(image, (bytes, bytearray, memoryview)):
        h.update(bytes(image))
    else:
        h.update(repr(image.shape).encode())
        h.update(np.ascontiguousarray(image).tobytes())
    return "sha256:" + h.hexdigest()


def read_shard_stats(out_dir: str, size: int, shard_id: int) -> dict | None:
    try:
        with open(stats_path(out_dir, size, shard_id), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_shard_stats(config: WriterConfig, shard_id: int, stats: dict) -> None:
    """Write a shard's stats for every size, the first size's last: it is what readers trust."""
    for size in reversed(config.sizes):
        atomic_write_json(stats_path(config.out_dir, size, shard_id), stats, indent=1)


def items_digest(items: Iterable[Any]) -> str:
    """Digest of a shard task's input items, so a rerun notices when a shard's inputs changed."""

    def default(value):
        if isinstance(value, (bytes, bytearray, memoryview)):
            return "bytes:" + hashlib.sha256(bytes(value)).hexdigest()
        if isinstance(value, np.ndarray):
            return f"array{value.shape}:" + hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        return repr(value)

    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps(item, sort_keys=True, default=default).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def shard_is_complete(config: WriterConfig, shard_id: int, task: ShardTask | None = None) -> bool:
    """True when every size has this shard's tar and a stats file written with the same settings
    (and, when `task` is given, from the same input items)."""
    digest = items_digest(task.items) if task is not None else None
    for size in config.sizes:
        stats = read_shard_stats(config.out_dir, size, shard_id)
        if stats is None or stats.get("config") != config.fingerprint():
            return False
        if digest is not None and stats.get("items_digest") not in (None, digest):
            return False
        if not os.path.exists(tar_path(config.out_dir, size, shard_id)):
            return False
    return True


def pending_tasks(tasks: Iterable[ShardTask], config: WriterConfig) -> list[ShardTask]:
    """The tasks whose shard is not complete for these settings and these inputs (what to run)."""
    return [t for t in tasks if not shard_is_complete(config, t.shard_id, t)]


def completed_shard_ids(config: WriterConfig) -> list[int]:
    pattern = os.path.join(config.out_dir, str(config.sizes[0]), "[0-9]*_stats.json")
    ids = sorted(int(os.path.basename(p).split("_")[0]) for p in glob.glob(pattern))
    return [sid for sid in ids if shard_is_complete(config, sid)]


def remove_partial_files(config: WriterConfig, shard_id: int) -> None:
    """Delete what a killed run left of this shard's writes: the writer's `NNNNN.tar.tmp-PID` files and the
    hidden temporary files of `data_pipeline.fsutil`'s atomic writes (`.NNNNN.tar.*.tmp`, `.NNNNN_stats.json.*`)."""
    name = glob.escape(shard_name(shard_id))
    for size in config.sizes:
        folder = glob.escape(os.path.join(config.out_dir, str(size)))
        patterns = (f"{name}.tar.tmp-*", f".{name}.tar.*.tmp", f".{name}_stats.json.*.tmp")
        for pattern in patterns:
            for stale in glob.glob(os.path.join(folder, pattern)):
                os.remove(stale)
