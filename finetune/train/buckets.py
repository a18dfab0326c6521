"""Aspect-ratio buckets: training on several image shapes, each batch of one shape.

A bucket is a shard set of the data pipeline's layout (`DIR/32/`, `DIR/64x32/`: `--sizes 32,64x32` writes them) read
from every `--data` folder that has it. Each bucket is read by its own deterministic streams (stream.TrainStream,
with a SampleMaker that crops to the bucket's shape), so a bucket's data position is kept exactly as a square run's
is. Which bucket the n-th batch comes from is drawn from a generator seeded by (seed, n), with probabilities in
proportion to the buckets' train-split sample counts: the choice needs no state beyond the number of batches
consumed, which the checkpoint keeps (stream.BucketTracker) along with every bucket's position, so a resumed run
draws the same buckets and the same samples as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from data_pipeline.shards import normalize_size, size_dims

from .augment import SampleMaker
from .dataset_discovery import Dataset, DatasetError, Shard, _is_imagefolder, _sha256, _tars_in, precheck
from .stream import BucketTracker, PositionTracker, TrainStream, make_loader

_BUCKET_STREAM = 0xB0C  # a constant in the seed of the bucket choice, apart from the streams' own seeds


@dataclass
class Bucket:
    name: str  # the shard set's folder name: "32" or "64x32" (width x height)
    height: int
    width: int
    shards: list[Shard]
    train_samples: int


def parse_buckets(text: str) -> list[str]:
    """`--buckets 32,64x32,32x64` -> shard-set names in the writer's spelling, in the order given."""
    names: list[str] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            name = str(normalize_size(part))
        except ValueError:
            raise DatasetError(f"--buckets takes N or WxH shard sets (e.g. 32,64x32,32x64), got {part!r}") from None
        if name not in names:
            names.append(name)
    if not names:
        raise DatasetError("--buckets names no shard set")
    return names


def resolve_buckets(entries: list[str], spec: str, decode) -> Dataset:
    """The dataset of a bucketed run: every bucket's shards from the --data folders that have its shard set,
    checked like a square run's data (readable, captioned, images at least the bucket's shape)."""
    names = parse_buckets(spec)
    found: dict[str, list[Shard]] = {name: [] for name in names}
    hashes = []
    for entry in entries:
        path = Path(entry)
        if not path.is_dir() or _is_imagefolder(path):
            raise DatasetError(
                f"--buckets reads dataset folders with shard sets (DIR/<size>/*.tar); {entry} is not one"
            )
        present = [name for name in names if _tars_in(path / name)]
        if not present:
            raise DatasetError(f"{entry} has none of the buckets' shard sets ({', '.join(names)})")
        for name in present:
            found[name] += [Shard(t) for t in _tars_in(path / name)]
        if (path / "manifest.json").is_file():
            hashes.append(_sha256(path / "manifest.json"))
    buckets = [_make_bucket(name, found[name], decode) for name in names]
    return Dataset(
        [s for b in buckets for s in b.shards],
        "webdataset",
        None,
        hashes[0] if len(hashes) == 1 else None,
        "buckets " + ", ".join(f"{b.name} ({b.train_samples} train samples, {len(b.shards)} shards)" for b in buckets),
        buckets,
    )


def _make_bucket(name: str, shards: list[Shard], decode) -> Bucket:
    if not shards:
        raise DatasetError(f"no --data folder has the bucket's shard set {name}/")
    width, height = size_dims(normalize_size(name))
    precheck(Dataset(shards, "webdataset", None, None, f"bucket {name}"), min(width, height), decode)
    train = sum(_train_count(shard) for shard in shards)
    if not train:
        raise DatasetError(f"bucket {name} has no train-split samples")
    return Bucket(name, height, width, shards, train)


def _train_count(shard: Shard) -> int:
    """Train samples of a shard: from the writer's stats when present, else by reading its headers."""
    counted = shard.split_count("train")
    return counted if counted is not None else sum(1 for r in shard.records() if r.split == "train")


def check_bucket_shapes(buckets: list[Bucket], factor: int) -> None:
    """Every bucket's sides must be multiples of the model's downsampling factor."""
    for bucket in buckets:
        if bucket.height % factor or bucket.width % factor:
            raise DatasetError(
                f"bucket {bucket.name}: the model needs sides that are multiples of {factor} (its downsampling factor)"
            )


def bucket_for_batch(weights: np.ndarray, seed: int, n: int) -> int:
    """Index of the bucket batch `n` (counted over the whole run) comes from: drawn in proportion to `weights`."""
    return int(np.random.default_rng([seed, _BUCKET_STREAM, n]).choice(len(weights), p=weights))


class BucketLoader:
    """Batches of several buckets' loaders, each batch from the bucket `bucket_for_batch` draws. A bucket's loader
    (and its worker processes) starts when the bucket is first drawn."""

    def __init__(self, loaders: list[torch.utils.data.DataLoader], counts: list[int], seed: int, start: int):
        self.loaders = loaders
        self.weights = np.asarray(counts, np.float64) / float(sum(counts))
        self.seed = seed
        self.start = start  # batches consumed before this loader: where the choice sequence continues

    def __iter__(self) -> Iterator[dict]:
        running: dict[int, Iterator[dict]] = {}
        n = self.start
        while True:
            k = bucket_for_batch(self.weights, self.seed, n)
            if k not in running:
                running[k] = iter(self.loaders[k])
            n += 1
            yield next(running[k])


def bucket_tracker(tracker: PositionTracker | BucketTracker, buckets: list[Bucket]) -> BucketTracker:
    """The run's data position as a BucketTracker over these buckets (a fresh run's tracker is a PositionTracker
    at the start; a resumed bucketed run's is already a BucketTracker)."""
    names = [b.name for b in buckets]
    if isinstance(tracker, BucketTracker):
        return tracker.with_buckets(names)
    return BucketTracker.fresh(tracker.layout, names)


def open_bucket_loader(
    buckets: list[Bucket],
    tracker: BucketTracker,
    maker: SampleMaker,
    tokenizer,
    config,
    pin_memory: bool,
) -> BucketLoader:
    """One deterministic stream set per bucket, from where `tracker` stands, mixed by BucketLoader."""
    loaders = []
    for bucket in buckets:
        place = tracker.trackers[bucket.name]
        stream = TrainStream(
            bucket.shards,
            dataclasses.replace(maker, shape=(bucket.height, bucket.width)),
            tokenizer,
            config.batch_size,
            config.shuffle_buffer,
            config.seed,
            place.layout,
            start=dict(place.places),
            worker_offset=place.loader_offset(),
            bucket=bucket.name,
        )
        loaders.append(make_loader(stream, config.num_workers, pin_memory=pin_memory))
    return BucketLoader(loaders, [b.train_samples for b in buckets], config.seed, tracker.consumed)
