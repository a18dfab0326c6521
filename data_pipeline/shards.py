"""The shard writer: every source ends here.

Layout (img2dataset's webdataset layout where the two overlap)::

    DIR/<size>/NNNNN.tar            KEY.jpg (or .png/.webp), KEY.txt, KEY.json per sample
    DIR/<size>/NNNNN_stats.json     per-shard counts; its presence marks the shard complete
    DIR/manifest.json               totals over all shards (write_manifest)

How a source uses it:

1. Cut its input into `ShardTask`s (`plan_shards`): a fixed list of input items per shard, so a
   rerun redoes exactly the shards that are not complete.
2. Write a picklable `produce(task)` generator that yields, for each item, one `Sample`
   (image as encoded bytes or a decoded RGB uint8 array) or one `Failure` (a reason string such
   as "http_404"), carrying the item's position in `task.items` as `index`.
3. Run the tasks with `data_pipeline.runner.run_shard_tasks` (processes, progress, resume), or
   call `write_shard` per task yourself (e.g. on Ray) followed by `finalize_dataset`.

Keys are derived from (shard_id, index) -- `make_key` -- so they are stable across reruns and the
same in every size. The train/val split hashes a group key (`Sample.group`; by default the exact
image content, so duplicate images land on one side). Shards are written to a temporary name and
renamed; the stats file is written last.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import io
import json
import os
import tarfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from data_pipeline import images
from data_pipeline.oserrors import naming_path
from data_pipeline.phash import find_near_duplicates, phash

# Failure reasons decided by the writer (image reasons live in data_pipeline.images).
EMPTY_CAPTION = "empty_caption"
BAD_IMAGE_ARRAY = "bad_image_array"
PROCESSING_ERROR = "processing_error"
NEAR_DUPLICATE = "near_duplicate"
NO_RESULT = "no_result"  # the source yielded nothing for an item

SPLITS = ("train", "val")
_TAR_MTIME = 1_700_000_000  # fixed so reruns produce byte-identical shards
_DETAIL_CHARS = 300
# Tar members above this are skipped when shards are read back. Shard members are resized images, captions and
# metadata (kilobytes to a few megabytes); the cap keeps a forged header from making a reader allocate gigabytes.
MAX_TAR_MEMBER_BYTES = 64 * 2**20


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


@dataclass(frozen=True)
class WriterConfig:
    out_dir: str
    sizes: tuple[int, ...] = (64,)
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
        sizes = tuple(sorted({int(s) for s in self.sizes}))
        if not sizes or sizes[0] < 1:
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
    def extension(self) -> str:
        return images.IMAGE_FORMATS[self.image_format].lstrip(".")

    def fingerprint(self) -> dict[str, Any]:
        """Settings that change shard content; a shard written with others is redone on resume."""
        d = asdict(self)
        del d["out_dir"], d["dedupe_distance"]
        d["sizes"] = list(self.sizes)
        d["pad_color"] = list(self.pad_color)
        return d


# ---------------------------------------------------------------- keys, paths, split


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


def clean_caption(text: str | None) -> str:
    """Collapse whitespace (incl. newlines/tabs) and drop control characters."""
    if not text:
        return ""
    text = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in str(text))
    return " ".join(text.split())


# ---------------------------------------------------------------- atomic files


def write_json_atomic(path: str, data: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with naming_path(path):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_shard_stats(out_dir: str, size: int, shard_id: int) -> dict | None:
    try:
        return _read_json(stats_path(out_dir, size, shard_id))
    except (OSError, ValueError):
        return None


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


# ---------------------------------------------------------------- tar helpers


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _TAR_MTIME
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def iter_tar_samples(
    path: str,
    lazy: Collection[str] = (),
    max_member_bytes: int = MAX_TAR_MEMBER_BYTES,
    oversized: list[str] | None = None,
) -> Iterator[tuple[str, dict]]:
    """Yield (key, {extension: bytes}) for each sample of a shard, in file order.

    Members whose extension is in `lazy` are not read: their entry is a zero-argument function that reads them,
    valid until the iteration moves on (callers that need only some of the images skip reading the rest).
    Members larger than `max_member_bytes` are never read (a header can claim gigabytes, e.g. a sparse member, in
    a file of a few kilobytes): they are left out of their sample and their names appended to `oversized`.
    """
    with tarfile.open(path, "r") as tar:
        key, files = None, {}
        for member in tar:
            if not member.isfile():
                continue
            stem, _, ext = member.name.partition(".")
            if stem != key:
                if key is not None:
                    yield key, files
                key, files = stem, {}
            if member.size > max_member_bytes:
                if oversized is not None:
                    oversized.append(member.name)
            elif ext in lazy:
                files[ext] = functools.partial(_read_member, tar, member)
            else:
                files[ext] = _read_member(tar, member)
        if key is not None:
            yield key, files


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    return tar.extractfile(member).read()


def _rewrite_samples(path: str) -> Iterator[tuple[str, dict]]:
    """`iter_tar_samples` for the writer's own rereads (merge, dedupe): oversized members are skipped with a
    warning naming the shard, so a forged member cannot exhaust memory and is not carried into the rewrite."""
    oversized: list[str] = []
    yield from iter_tar_samples(path, oversized=oversized)
    if oversized:
        warnings.warn(
            f"{path}: skipped {len(oversized)} tar member(s) larger than {MAX_TAR_MEMBER_BYTES} bytes "
            f"(first: {oversized[0]})",
            stacklevel=2,
        )


def _assemble_tar(dest: str, sources: list[str], drop: set[str] = frozenset()) -> None:
    """Write `dest` with the samples of `sources` in key order; later sources win on equal keys."""
    chosen: dict[str, int] = {}
    for pos, src in enumerate(sources):
        for key, _ in _rewrite_samples(src):
            chosen[key] = pos
    wanted = {pos: {k for k, p in chosen.items() if p == pos and k not in drop} for pos in range(len(sources))}
    collected: dict[str, dict[str, bytes]] = {}
    for pos, src in enumerate(sources):
        for key, files in _rewrite_samples(src):
            if key in wanted[pos]:
                collected[key] = files
    tmp = f"{dest}.tmp-{os.getpid()}-assemble"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for key in sorted(collected):
            for ext in sorted(collected[key], key=_member_order):
                _add_member(tar, f"{key}.{ext}", collected[key][ext])
    os.replace(tmp, dest)


def _member_order(ext: str) -> tuple[int, str]:
    return (0 if ext not in ("txt", "json") else 1 if ext == "txt" else 2, ext)


# ---------------------------------------------------------------- the writer


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


def _prepare_image(sample: Sample, config: WriterConfig) -> tuple[np.ndarray, int, int]:
    if isinstance(sample.image, (bytes, bytearray, memoryview)):
        rgb, (w, h) = images.decode_image(
            bytes(sample.image),
            max_pixels=config.max_pixels,
            min_side=config.min_image_side,
            draft_side=max(config.sizes),
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


def _sample_json(key: str, sample: Sample, caption: str, split: str, width: int, height: int) -> dict:
    captions = [c for c in (clean_caption(c) for c in (sample.captions or [caption])) if c]
    return {
        "key": key,
        "caption": caption,
        "captions": captions or [caption],
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
    out = config.out_dir
    sid = task.shard_id
    for size in config.sizes:
        os.makedirs(os.path.join(out, str(size)), exist_ok=True)
        for stale in glob.glob(glob.escape(tar_path(out, size, sid)) + ".tmp-*"):  # a killed run's
            os.remove(stale)
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
                for index in sorted(set(range(len(task))) - set(order)):
                    outcome.fail(make_key(sid, index, config.shard_size), index, NO_RESULT)
                in_order = all(a < b for a, b in zip(order, order[1:]))
                for size in config.sizes:
                    if in_order:
                        os.replace(tmp_paths[size], tar_path(out, size, sid))
                    else:
                        _assemble_tar(tar_path(out, size, sid), [tmp_paths[size]])
                stats = _stats(task, config, outcome, started)
            else:
                for size in config.sizes:
                    _assemble_tar(tar_path(out, size, sid), [tar_path(out, size, sid), tmp_paths[size]])
                stats = _merged_stats(previous, config, outcome, set(order), started)
    finally:
        for p in tmp_paths.values():
            if os.path.exists(p):
                os.remove(p)
    for size in reversed(config.sizes):  # the first size's stats last: it is what readers trust
        write_json_atomic(stats_path(out, size, sid), stats)
    return stats


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


def _write_sample(sample: Sample, key: str, config: WriterConfig, tars: dict, outcome: _Outcome) -> bool:
    caption = clean_caption(sample.caption)
    if not caption:
        caption = next((c for c in (clean_caption(c) for c in sample.captions or []) if c), "")
    if not caption:
        outcome.fail(key, sample.index, EMPTY_CAPTION, url=sample.url)
        return False
    try:
        rgb, width, height = _prepare_image(sample, config)
        encoded = {}
        square = None
        for size in reversed(config.sizes):
            # Each smaller size is made from the next larger square: cheaper than from the
            # original, and area averaging composes, so the result is practically the same.
            square = (
                images.resize_square(rgb, size, config.resize_mode, config.pad_color)
                if square is None
                else images.resize_square(square, size, "center_crop")
            )
            encoded[size] = images.encode_image(square, config.image_format, config.quality)
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
    for key, files in _rewrite_samples(tar_path(config.out_dir, config.sizes[0], previous["shard_id"])):
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


# ---------------------------------------------------------------- dataset-level steps


def completed_shard_ids(config: WriterConfig) -> list[int]:
    pattern = os.path.join(config.out_dir, str(config.sizes[0]), "[0-9]*_stats.json")
    ids = sorted(int(os.path.basename(p).split("_")[0]) for p in glob.glob(pattern))
    return [sid for sid in ids if shard_is_complete(config, sid)]


def remove_near_duplicates(config: WriterConfig) -> int:
    """Drop near-duplicate images across all complete shards, keeping the smallest key of each
    cluster. Deterministic and idempotent: rerunning after an interruption finishes the job."""
    if config.dedupe_distance is None:
        return 0
    shard_ids = completed_shard_ids(config)
    all_stats = {sid: read_shard_stats(config.out_dir, config.sizes[0], sid) for sid in shard_ids}
    hashes = [(k, int(v, 16)) for st in all_stats.values() for k, v in st.get("phash", {}).items()]
    duplicates = find_near_duplicates(hashes, config.dedupe_distance)
    removed = 0
    for sid, stats in all_stats.items():
        drop = {k: duplicates[k] for k in stats.get("phash", {}) if k in duplicates}
        if not drop:
            continue
        for size in config.sizes:
            _assemble_tar(tar_path(config.out_dir, size, sid), [tar_path(config.out_dir, size, sid)], set(drop))
        splits: Counter = Counter()
        for _, files in _rewrite_samples(tar_path(config.out_dir, config.sizes[0], sid)):
            splits[json.loads(files["json"]).get("split", "train")] += 1
        digits = key_digits(config.shard_size)
        failed = stats.get("failed_items", []) + [
            {"key": k, "index": int(k) % 10**digits, "reason": NEAR_DUPLICATE, "detail": f"near-duplicate of {keep}"}
            for k, keep in sorted(drop.items())
        ]
        stats.update(
            successes=stats["successes"] - len(drop),
            failed=len(failed),
            failures=dict(sorted(Counter(f["reason"] for f in failed).items())),
            splits={s: splits.get(s, 0) for s in SPLITS},
            failed_items=sorted(failed, key=lambda d: d["index"]),
            phash={k: v for k, v in stats["phash"].items() if k not in drop},
        )
        for size in reversed(config.sizes):
            write_json_atomic(stats_path(config.out_dir, size, sid), stats)
        removed += len(drop)
    return removed


def write_manifest(
    config: WriterConfig,
    sources: list[dict] | None = None,
    filters: dict | None = None,
    expected_shards: int | None = None,
) -> dict:
    """Aggregate the complete shards' stats into DIR/manifest.json and return it."""
    shard_ids = completed_shard_ids(config)
    failures: Counter = Counter()
    splits: Counter = Counter()
    shards = []
    items = successes = 0
    for sid in shard_ids:
        st = read_shard_stats(config.out_dir, config.sizes[0], sid)
        items += st["count"]
        successes += st["successes"]
        failures.update(st.get("failures", {}))
        splits.update(st.get("splits", {}))
        shards.append(
            {"shard": st["shard"], "count": st["count"], "successes": st["successes"], "failed": st["failed"]}
        )
    manifest = {
        "format": "webdataset",
        "layout": "DIR/<size>/NNNNN.tar with KEY.<image>, KEY.txt, KEY.json",
        "sources": sources or [],
        "filters": filters or {},
        "sizes": list(config.sizes),
        "resize_mode": config.resize_mode,
        "image_format": config.image_format,
        "image_extension": config.extension,
        "quality": config.quality,
        "val_fraction": config.val_fraction,
        "shard_size": config.shard_size,
        "dedupe_distance": config.dedupe_distance,
        "totals": {
            "shards": len(shard_ids),
            "expected_shards": expected_shards if expected_shards is not None else len(shard_ids),
            "items": items,
            "samples": successes,
            "failed": sum(failures.values()),
        },
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "failures": dict(sorted(failures.items())),
        "shards": shards,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(os.path.join(config.out_dir, "manifest.json"), manifest)
    return manifest
