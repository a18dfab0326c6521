"""The shard writer: one shard (every size) from the samples a source produces, written to temporary tars and
renamed into place, its stats file last. Per-sample problems become failures counted by reason."""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from data_pipeline import images
from data_pipeline.fsutil import atomic_write, fsync_dir
from data_pipeline.oserrors import naming_path
from data_pipeline.phash import phash
from data_pipeline.shards.captions import all_captions, first_caption
from data_pipeline.shards.layout import (
    SPLITS,
    assign_split,
    content_group,
    items_digest,
    make_key,
    read_shard_stats,
    remove_partial_files,
    shard_is_complete,
    shard_name,
    tar_path,
    write_shard_stats,
)
from data_pipeline.shards.plan import Failure, Sample, ShardTask, WriterConfig, size_dims
from data_pipeline.shards.reader import reread_samples

# Failure reasons decided by the writer (image reasons live in data_pipeline.images).
EMPTY_CAPTION = "empty_caption"
BAD_IMAGE_ARRAY = "bad_image_array"
PROCESSING_ERROR = "processing_error"
NO_RESULT = "no_result"  # the source yielded nothing for an item

_TAR_MTIME = 1_700_000_000  # fixed so reruns produce byte-identical shards
_DETAIL_CHARS = 300


# ---------------------------------------------------------------- tar members


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _TAR_MTIME
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _member_order(ext: str) -> tuple[int, str]:
    return (0 if ext not in ("txt", "json") else 1 if ext == "txt" else 2, ext)


def assemble_tar(dest: str, sources: list[str], drop: set[str] = frozenset()) -> None:
    """Write `dest` atomically with the samples of `sources` in key order; later sources win on equal keys."""
    chosen: dict[str, int] = {}
    for pos, src in enumerate(sources):
        for key, _ in reread_samples(src):
            chosen[key] = pos
    wanted = {pos: {k for k, p in chosen.items() if p == pos and k not in drop} for pos in range(len(sources))}
    collected: dict[str, dict[str, bytes]] = {}
    for pos, src in enumerate(sources):
        for key, files in reread_samples(src):
            if key in wanted[pos]:
                collected[key] = files

    def write(tmp: str) -> None:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for key in sorted(collected):
                for ext in sorted(collected[key], key=_member_order):
                    _add_member(tar, f"{key}.{ext}", collected[key][ext])

    atomic_write(dest, write)


def _publish_tar(tmp: str, dest: str) -> None:
    """Rename a fully written tar into place, on disk before the stats file that marks it complete."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    fsync_dir(os.path.dirname(dest))


# ---------------------------------------------------------------- one shard


@dataclass
class _Outcome:
    successes: int = 0
    failures: Counter = field(default_factory=Counter)
    failed_items: list[dict] = field(default_factory=list)
    splits: Counter = field(default_factory=Counter)
    hashes: dict[str, str] = field(default_factory=dict)

    def fail(self, key: str, index: int, reason: str, detail: str = "", url: str | None = None) -> None:
        self.failures[reason] += 1
        item = {"key": key, "index": index, "reason": reason}
        if detail:
            item["detail"] = str(detail)[:_DETAIL_CHARS]
        if url:
            item["url"] = url
        self.failed_items.append(item)


def write_shard(
    task: ShardTask,
    produce: Callable[[ShardTask], Iterable[Sample | Failure]],
    config: WriterConfig,
    on_record: Callable[[bool], None] | None = None,
    merge_existing: bool = False,
) -> dict:
    """Write one shard (every size) from the records `produce(task)` yields; return its stats.

    Exceptions raised by `produce` propagate and leave the shard incomplete (a rerun redoes it);
    per-sample problems become failures counted by reason. `on_record(ok)` is called per record.
    With `merge_existing`, the samples of an already written shard are kept and the yielded
    records replace the earlier outcome of their indices (used to retry failed items).
    """
    started = time.time()
    out, sid = config.out_dir, task.shard_id
    for size in config.sizes:
        os.makedirs(os.path.join(out, str(size)), exist_ok=True)
    remove_partial_files(config, sid)
    previous = None
    if merge_existing:
        previous = read_shard_stats(out, config.sizes[0], sid)
        if previous is None or not shard_is_complete(config, sid):
            raise RuntimeError(f"shard {shard_name(sid)} is not complete; cannot merge into it")

    tmp_paths = {size: f"{tar_path(out, size, sid)}.tmp-{os.getpid()}" for size in config.sizes}
    try:
        with naming_path(out):  # a write() on a full disk names no file: name the dataset at least
            outcome, order = _write_records(task, produce, config, on_record, tmp_paths)
            if previous is None:
                stats = _publish_new_shard(task, config, outcome, order, tmp_paths, started)
            else:
                for size in config.sizes:
                    assemble_tar(tar_path(out, size, sid), [tar_path(out, size, sid), tmp_paths[size]])
                stats = _merged_stats(previous, config, outcome, set(order), started)
    finally:
        for p in tmp_paths.values():
            if os.path.exists(p):
                os.remove(p)
    write_shard_stats(config, sid, stats)
    return stats


def _publish_new_shard(task, config, outcome, order, tmp_paths, started) -> dict:
    """Put a freshly written shard's tars in place (sorted by key if the source yielded out of order)."""
    sid = task.shard_id
    for index in sorted(set(range(len(task))) - set(order)):
        outcome.fail(make_key(sid, index, config.shard_size), index, NO_RESULT)
    in_order = all(a < b for a, b in zip(order, order[1:]))
    for size in config.sizes:
        if in_order:
            _publish_tar(tmp_paths[size], tar_path(config.out_dir, size, sid))
        else:
            assemble_tar(tar_path(config.out_dir, size, sid), [tmp_paths[size]])
    return _stats(task, config, outcome, started)


def _write_records(task, produce, config, on_record, tmp_paths) -> tuple[_Outcome, list[int]]:
    outcome = _Outcome()
    order: list[int] = []
    seen: set[int] = set()
    tars = {size: tarfile.open(p, "w", format=tarfile.PAX_FORMAT) for size, p in tmp_paths.items()}
    try:
        for record in produce(task):
            index = record.index
            if index in seen:
                raise ValueError(f"source yielded index {index} twice in shard {shard_name(task.shard_id)}")
            seen.add(index)
            order.append(index)
            key = make_key(task.shard_id, index, config.shard_size)
            ok = False
            if isinstance(record, Failure):
                outcome.fail(key, index, record.reason, record.detail, record.url)
            else:
                ok = _write_sample(record, key, config, tars, outcome)
            if on_record is not None:
                on_record(ok)
    finally:
        for tar in tars.values():
            tar.close()
    return outcome, order


# ---------------------------------------------------------------- one sample


def _prepare_image(sample: Sample, config: WriterConfig) -> tuple[np.ndarray, int, int]:
    if isinstance(sample.image, (bytes, bytearray, memoryview)):
        rgb, (w, h) = images.decode_image(
            bytes(sample.image),
            max_pixels=config.max_pixels,
            min_side=config.min_image_side,
            draft_side=config.largest_side,
        )
        return rgb, w, h
    arr = np.asarray(sample.image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3)):
        raise images.ImageError(BAD_IMAGE_ARRAY, f"expected uint8 (H, W, 3), got {arr.dtype} {arr.shape}")
    if arr.ndim == 2 or arr.shape[2] == 1:
        arr = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    h, w = arr.shape[:2]
    if min(h, w) < config.min_image_side:
        raise images.ImageError(images.IMAGE_TOO_SMALL, f"{w}x{h} is smaller than {config.min_image_side} px")
    return np.ascontiguousarray(arr), w, h


def _encode_sizes(rgb: np.ndarray, config: WriterConfig) -> dict[int | str, bytes]:
    encoded = {}
    made: dict[tuple[int, int], np.ndarray] = {}  # the largest image made so far of each aspect, by reduced ratio
    for size in reversed(config.sizes):
        width, height = size_dims(size)
        aspect = (width // math.gcd(width, height), height // math.gcd(width, height))
        # Each smaller size of an aspect is made from the next larger one: cheaper than from the original, and
        # area averaging composes, so the result is practically the same. Other aspects start from the original.
        larger = made.get(aspect)
        image = (
            images.resize_to(rgb, width, height, config.resize_mode, config.pad_color)
            if larger is None
            else images.resize_to(larger, width, height, "center_crop")
        )
        made[aspect] = image
        encoded[size] = images.encode_image(image, config.image_format, config.quality)
    return encoded


def _sample_json(key: str, sample: Sample, caption: str, split: str, width: int, height: int) -> dict:
    return {
        "key": key,
        "caption": caption,
        "captions": all_captions(sample.captions, caption),
        "source": sample.source,
        "url": sample.url,
        "width": int(sample.width if sample.width is not None else width),
        "height": int(sample.height if sample.height is not None else height),
        "similarity": None if sample.similarity is None else float(sample.similarity),
        "license": sample.license,
        "attribution": sample.attribution,
        "split": split,
        "attributes": sample.attributes,
    }


def _write_sample(sample: Sample, key: str, config: WriterConfig, tars: dict, outcome: _Outcome) -> bool:
    caption = first_caption(sample.caption, sample.captions)
    if not caption:
        outcome.fail(key, sample.index, EMPTY_CAPTION, url=sample.url)
        return False
    try:
        rgb, width, height = _prepare_image(sample, config)
        encoded = _encode_sizes(rgb, config)
        hashed = f"{phash(rgb):016x}" if config.dedupe_distance is not None else None
    except images.ImageError as exc:
        outcome.fail(key, sample.index, exc.reason, exc.detail, sample.url)
        return False
    except (cv2.error, ValueError, MemoryError) as exc:
        outcome.fail(key, sample.index, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}", sample.url)
        return False
    split = assign_split(sample.group or content_group(sample.image), config.val_fraction)
    meta = json.dumps(_sample_json(key, sample, caption, split, width, height), ensure_ascii=False).encode()
    for size, tar in tars.items():
        _add_member(tar, f"{key}.{config.extension}", encoded[size])
        _add_member(tar, f"{key}.txt", caption.encode("utf-8"))
        _add_member(tar, f"{key}.json", meta)
    outcome.successes += 1
    outcome.splits[split] += 1
    if hashed is not None:
        outcome.hashes[key] = hashed
    return True


# ---------------------------------------------------------------- stats


def count_splits(path: str) -> Counter:
    """Samples per split in a written tar (from each sample's JSON)."""
    splits: Counter = Counter()
    for _, files in reread_samples(path):
        splits[json.loads(files["json"]).get("split", "train")] += 1
    return splits


def _stats(task: ShardTask, config: WriterConfig, outcome: _Outcome, started: float) -> dict:
    ended = time.time()
    return {
        "shard_id": task.shard_id,
        "shard": shard_name(task.shard_id),
        "count": len(task),
        "successes": outcome.successes,
        "failed": sum(outcome.failures.values()),
        "failures": dict(sorted(outcome.failures.items())),
        "splits": {s: outcome.splits.get(s, 0) for s in SPLITS},
        "failed_items": sorted(outcome.failed_items, key=lambda d: d["index"]),
        "phash": dict(sorted(outcome.hashes.items())),
        "config": config.fingerprint(),
        "items_digest": items_digest(task.items),
        "start_time": started,
        "end_time": ended,
        "duration": round(ended - started, 3),
    }


def _merged_stats(previous: dict, config: WriterConfig, outcome: _Outcome, retried: set[int], started: float) -> dict:
    """Stats of a shard after retrying some items: recount from the merged tar."""
    splits: Counter = Counter()
    keys: set[str] = set()
    for key, files in reread_samples(tar_path(config.out_dir, config.sizes[0], previous["shard_id"])):
        keys.add(key)
        splits[json.loads(files["json"]).get("split", "train")] += 1
    failed = [f for f in previous.get("failed_items", []) if f["index"] not in retried and f["key"] not in keys]
    failed += outcome.failed_items
    hashes = {k: v for k, v in previous.get("phash", {}).items() if k in keys}
    hashes.update(outcome.hashes)
    ended = time.time()
    return {
        **previous,
        "successes": len(keys),
        "failed": len(failed),
        "failures": dict(sorted(Counter(f["reason"] for f in failed).items())),
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "failed_items": sorted(failed, key=lambda d: d["index"]),
        "phash": dict(sorted(hashes.items())),
        "end_time": ended,
        "duration": round(previous.get("duration", 0) + ended - started, 3),
    }
