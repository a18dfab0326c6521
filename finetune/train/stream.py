"""Deterministic, resumable training data streams.

Every training process runs `num_workers` (at least one) data streams; stream `g` of `G = processes x workers`
reads, each epoch, the shards `perm[g::G]` of a seeded shard permutation (or every G-th sample when there are
fewer shards than streams), passes them through a seeded shuffle buffer and makes whole batches. A stream's
place is (epoch, records consumed in that epoch); batches carry it, the trainer keeps the place of the last
batch it consumed from each stream, and a resumed stream replays its epoch up to that place from the records
alone (no image is decoded while skipping). Per-sample randomness comes from a generator seeded by
(seed, epoch, stream, index), so a replayed sample gets the same crop, caption and mask.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from data_pipeline.images import decode_image

from .augment import SampleMaker
from .dataset_discovery import Dataset, DatasetError, FileCache, Record, Shard


def decode_rgb(data: bytes) -> np.ndarray:
    return decode_image(data)[0]


def collate(samples: list[dict], tokenizer) -> dict:
    """Stack prepared samples into tensors and tokenize captions (unconditional rows get the empty caption)."""
    batch: dict = {"image": torch.from_numpy(np.stack([s["image"] for s in samples]))}
    for name in ("low_res", "inpaint_mask"):
        if name in samples[0]:
            batch[name] = torch.from_numpy(np.stack([s[name] for s in samples]))
    uncond = torch.tensor([s["uncond"] for s in samples], dtype=torch.bool)
    tokens, mask = tokenizer.encode([s["caption"] if not s["uncond"] else "" for s in samples])
    if uncond.any():
        empty_tokens, empty_mask = tokenizer.empty(int(uncond.sum()))
        tokens[uncond] = empty_tokens.to(tokens.dtype)
        mask[uncond] = empty_mask.to(mask.dtype)
    batch["tokens"], batch["mask"], batch["uncond"] = tokens, mask, uncond
    batch["prior"] = torch.tensor([bool(s.get("prior", False)) for s in samples], dtype=torch.bool)
    batch["captions"] = [s["caption"] for s in samples]
    batch["keys"] = [s["key"] for s in samples]
    return batch


class _ShuffleBuffer:
    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng, self.items = max(1, size), rng, []

    def run(self, records: Iterator[Record]) -> Iterator[Record]:
        for rec in records:
            if len(self.items) < self.size:
                self.items.append(rec)
                continue
            i = int(self.rng.integers(self.size))
            out, self.items[i] = self.items[i], rec
            yield out
        order = self.rng.permutation(len(self.items))
        for i in order:
            yield self.items[i]
        self.items = []


@dataclass
class StreamLayout:
    """Who reads what: `world_size` processes x `workers` streams each."""

    world_size: int = 1
    rank: int = 0
    workers: int = 1  # streams per process (DataLoader workers, or 1 in-process)

    @property
    def total(self) -> int:
        return self.world_size * self.workers

    def stream_id(self, local: int) -> int:
        return self.rank * self.workers + local


def epoch_records(
    shards: list[Shard], seed: int, epoch: int, stream: int, total: int, split: str = "train"
) -> Iterator[Record]:
    """The records stream `stream` of `total` reads in `epoch`, before shuffling."""
    order = np.random.default_rng([seed, epoch, 1]).permutation(len(shards))
    if len(shards) >= total:
        for i in order[stream::total]:
            for rec in shards[i].records():
                if rec.split == split:
                    yield rec
        return
    n = 0
    for i in order:
        for rec in shards[i].records():
            if rec.split != split:
                continue
            if n % total == stream:
                yield rec
            n += 1


@dataclass
class TrainStream(IterableDataset):
    """Infinite iterator of training batches; see the module docstring for the resume scheme."""

    shards: list[Shard]
    maker: SampleMaker
    tokenizer: object
    batch_size: int
    shuffle_buffer: int
    seed: int
    layout: StreamLayout
    start: dict[int, tuple[int, int]] = field(default_factory=dict)  # stream id -> (epoch, offset)
    worker_offset: int = 0  # rotates DataLoader workers onto streams so a resumed loader continues in order
    bucket: str = ""  # the aspect-ratio bucket these batches belong to (finetune.train.buckets), if any

    def __post_init__(self):
        super().__init__()

    def _local_stream(self) -> int:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        return (worker + self.worker_offset) % self.layout.workers

    def __iter__(self) -> Iterator[dict]:
        cv2.setNumThreads(1)
        stream = self.layout.stream_id(self._local_stream())
        epoch, skip = self.start.get(stream, (0, 0))
        files = FileCache()
        pending: list[dict] = []
        skipped = 0
        try:
            while True:
                records = _ShuffleBuffer(self.shuffle_buffer, np.random.default_rng([self.seed, epoch, stream, 2]))
                index = -1
                for index, rec in enumerate(
                    records.run(epoch_records(self.shards, self.seed, epoch, stream, self.layout.total))
                ):
                    if index < skip:
                        continue
                    sample = self._prepare(rec, files, np.random.default_rng([self.seed, epoch, stream, index]))
                    if sample is None:
                        skipped += 1
                        continue
                    pending.append(sample)
                    if len(pending) == self.batch_size:
                        batch = collate(pending, self.tokenizer)
                        batch.update(stream=stream, epoch=epoch, offset=index + 1, skipped=skipped)
                        if self.bucket:
                            batch["bucket"] = self.bucket
                        pending, skipped = [], 0
                        yield batch
                if index < 0:
                    raise DatasetError(
                        f"data stream {stream} of {self.layout.total} got no training samples in epoch {epoch}: "
                        f"the dataset has too few train-split samples for {self.layout.world_size} process(es) x "
                        f"{self.layout.workers} worker(s)"
                    )
                epoch, skip = epoch + 1, 0
        finally:
            files.close()

    def _prepare(self, rec: Record, files: FileCache, rng: np.random.Generator) -> dict | None:
        if not rec.captions:
            return None
        try:
            rgb = decode_rgb(rec.read_bytes(files))
        except Exception:  # noqa: BLE001 - a bad sample is skipped and counted, never fatal
            return None
        if self.maker.too_small(rgb):
            return None
        sample = self.maker.train_sample(rgb, rec.captions, rng, keep_caption=rec.keep_caption)
        sample["key"], sample["prior"] = rec.key, rec.prior
        return sample


def make_loader(stream: TrainStream, num_workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
        # fork (Linux) starts workers without pickling the dataset; elsewhere the platform default (spawn) is safer
        multiprocessing_context="fork" if num_workers and sys.platform.startswith("linux") else None,
    )


def find_records(dataset: Dataset, split: str, limit: int, require_caption: bool = True) -> list[Record]:
    """The first `limit` records of a split, in shard order (stable: the val set and the sample prompts)."""
    found: list[Record] = []
    for shard in dataset.shards:
        if shard.split_count(split) == 0:
            continue  # the shard's stats say it has none: no need to read its headers
        for rec in shard.records():
            if rec.split == split and (rec.captions or not require_caption):
                found.append(rec)
                if len(found) >= limit:
                    return found
    return found


def val_samples(records: list[Record], maker: SampleMaker, seed: int) -> list[dict]:
    """Deterministic validation samples (center crop, first caption, fixed masks); undecodable ones are dropped."""
    out = []
    files = FileCache()
    try:
        for i, rec in enumerate(records):
            try:
                rgb = decode_rgb(rec.read_bytes(files))
            except Exception:  # noqa: BLE001
                continue
            if maker.too_small(rgb):
                continue
            sample = maker.val_sample(rgb, rec.captions, i, seed)
            sample["key"] = rec.key
            out.append(sample)
    finally:
        files.close()
    return out


class PositionTracker:
    """The place of the last consumed batch of each stream of this process, and the number consumed."""

    def __init__(self, layout: StreamLayout, start: dict[int, tuple[int, int]] | None = None, consumed: int = 0):
        self.layout = layout
        self.places = dict(start or {})
        self.consumed = consumed

    def update(self, batch: dict) -> None:
        self.places[int(batch["stream"])] = (int(batch["epoch"]), int(batch["offset"]))
        self.consumed += 1

    def state(self) -> dict:
        return {
            "world_size": self.layout.world_size,
            "workers": self.layout.workers,
            "rank": self.layout.rank,
            "consumed_batches": self.consumed,
            "places": {str(k): list(v) for k, v in sorted(self.places.items())},
        }

    @staticmethod
    def from_state(state: dict, layout: StreamLayout) -> tuple["PositionTracker | BucketTracker", str | None]:
        """Restore; a different process/worker layout cannot replay exactly, so restart at the earliest epoch.
        A bucketed run's state (one place per bucket) comes back as a BucketTracker."""
        if "buckets" in state:
            return BucketTracker.from_state(state, layout)
        places = {int(k): (int(v[0]), int(v[1])) for k, v in state.get("places", {}).items()}
        if state.get("world_size") == layout.world_size and state.get("workers") == layout.workers:
            return PositionTracker(layout, places, int(state.get("consumed_batches", 0))), None
        epoch = min((e for e, _ in places.values()), default=0)
        start = {layout.stream_id(i): (epoch, 0) for i in range(layout.workers)}
        note = (
            f"the data layout changed ({state.get('world_size')}x{state.get('workers')} -> "
            f"{layout.world_size}x{layout.workers} processes x workers): data restarts at epoch {epoch}, so the "
            f"resumed run will not repeat the uninterrupted one exactly"
        )
        return PositionTracker(layout, start, 0), note

    def loader_offset(self) -> int:
        return self.consumed % self.layout.workers


class BucketTracker:
    """The data position of an aspect-ratio bucketed run: a PositionTracker per bucket (each bucket is its own set of
    streams) and the number of batches consumed in all, which is where the seeded choice of buckets stands
    (finetune.train.buckets.bucket_for_batch). Saved in checkpoints in place of a PositionTracker's state."""

    def __init__(self, layout: StreamLayout, trackers: dict[str, PositionTracker], consumed: int = 0):
        self.layout = layout
        self.trackers = trackers
        self.consumed = consumed

    @staticmethod
    def fresh(layout: StreamLayout, names: list[str]) -> "BucketTracker":
        return BucketTracker(layout, {name: PositionTracker(layout) for name in names})

    def with_buckets(self, names: list[str]) -> "BucketTracker":
        """This position for exactly these buckets (a bucket not saved starts at its beginning)."""
        trackers = {name: self.trackers.get(name) or PositionTracker(self.layout) for name in names}
        return BucketTracker(self.layout, trackers, self.consumed)

    def update(self, batch: dict) -> None:
        self.trackers[batch["bucket"]].update(batch)
        self.consumed += 1

    def state(self) -> dict:
        return {
            "world_size": self.layout.world_size,
            "workers": self.layout.workers,
            "rank": self.layout.rank,
            "consumed_batches": self.consumed,
            "buckets": {name: tracker.state() for name, tracker in sorted(self.trackers.items())},
        }

    @staticmethod
    def from_state(state: dict, layout: StreamLayout) -> tuple["BucketTracker", str | None]:
        trackers, notes = {}, []
        for name, saved in state["buckets"].items():
            trackers[name], note = PositionTracker.from_state(saved, layout)
            if note and not notes:
                notes.append(note)
        return BucketTracker(layout, trackers, int(state.get("consumed_batches", 0))), (notes[0] if notes else None)
