"""The dataset-level steps after every shard is written: near-duplicate removal across shards (optional) and
DIR/manifest.json, the totals over all complete shards."""

from __future__ import annotations

import os
import time
from collections import Counter

from data_pipeline.fsutil import atomic_write_json
from data_pipeline.phash import find_near_duplicates
from data_pipeline.shards.layout import (
    SPLITS,
    completed_shard_ids,
    key_digits,
    read_shard_stats,
    tar_path,
    write_shard_stats,
)
from data_pipeline.shards.plan import WriterConfig
from data_pipeline.shards.writer import assemble_tar, count_splits

NEAR_DUPLICATE = "near_duplicate"


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
        if drop:
            _drop_from_shard(config, sid, stats, drop)
            removed += len(drop)
    return removed


def _drop_from_shard(config: WriterConfig, sid: int, stats: dict, drop: dict[str, str]) -> None:
    """Rewrite one shard without the `drop` keys (each mapped to the key it duplicates) and update its stats."""
    for size in config.sizes:
        assemble_tar(tar_path(config.out_dir, size, sid), [tar_path(config.out_dir, size, sid)], set(drop))
    splits = count_splits(tar_path(config.out_dir, config.sizes[0], sid))
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
    write_shard_stats(config, sid, stats)


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
    atomic_write_json(os.path.join(config.out_dir, "manifest.json"), manifest, indent=1)
    return manifest
