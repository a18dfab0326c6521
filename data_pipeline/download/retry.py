"""`retry DIR`: fetch again the failed samples of an earlier web download, chosen by reason.

Only the failed items of complete shards are fetched; recovered samples are merged into their
shard (same keys as an uninterrupted run would have given them), the shard stats and the
manifest are rewritten, and every other sample is left as it was.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass

from tqdm import tqdm

from data_pipeline.cli import exit_status_1
from data_pipeline.errors import UserError
from data_pipeline.runner import finalize_dataset
from data_pipeline.shards import (
    ShardTask,
    WriterConfig,
    completed_shard_ids,
    read_shard_stats,
    shard_name,
    write_shard,
)
from data_pipeline.workers import process_pool

from .cli import add_download_options, options_from_args
from .downloader import DownloadOptions, DownloadProducer, download_plan_tasks, read_plan, write_plan

# Failures worth another try by default: the server or the network may behave next time.
TRANSIENT_REASONS = (
    "timeout",
    "deadline",
    "connection_error",
    "incomplete_body",
    "http_408",
    "http_425",
    "http_429",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "request_error",
    "unexpected_error",
)


@dataclass
class RetryResult:
    shards: int
    attempted: int
    recovered: int
    failures_before: dict[str, int]
    manifest: dict


def failed_by_shard(config: WriterConfig, reasons: set[str] | None) -> dict[int, frozenset[int]]:
    """Shard id -> indices of failed items whose reason is in `reasons` (None: every reason)."""
    chosen: dict[int, frozenset[int]] = {}
    for sid in completed_shard_ids(config):
        stats = read_shard_stats(config.out_dir, config.sizes[0], sid) or {}
        idx = frozenset(f["index"] for f in stats.get("failed_items", []) if reasons is None or f["reason"] in reasons)
        if idx:
            chosen[sid] = idx
    return chosen


def _retry_shard(task: ShardTask, producer: DownloadProducer, config: WriterConfig) -> dict:
    return write_shard(task, producer, config, merge_existing=True)


def retry_failed(
    out_dir: str,
    reasons: set[str] | None = None,
    options: DownloadOptions | None = None,
    processes: int = 1,
    progress: bool = True,
) -> RetryResult:
    """Retry the failed items of `out_dir` whose reason is in `reasons` (None: all reasons)."""
    items, config, recorded = read_plan(out_dir)
    options = options or recorded
    if not os.path.exists(items):
        raise FileNotFoundError(f"the item table {items} recorded in the plan is missing")
    tasks = {t.shard_id: t for t in download_plan_tasks(items, config)}
    incomplete = sorted(set(tasks) - set(completed_shard_ids(config)))
    if incomplete:
        raise RuntimeError(
            f"{len(incomplete)} shard(s) are not complete (first: {shard_name(incomplete[0])}); "
            "finish the original download first by rerunning its command"
        )
    manifest_path = os.path.join(out_dir, "manifest.json")
    previous = {}
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as fh:
            previous = json.load(fh)
    before = Counter(previous.get("failures", {}))
    chosen = failed_by_shard(config, reasons)
    attempted = sum(len(v) for v in chosen.values())
    write_plan(config, options, items)  # later retries reuse the options given now
    producer = DownloadProducer(options, config, only=chosen)
    recovered_before = previous.get("totals", {}).get("samples", 0)
    errors: list[str] = []
    bar = tqdm(total=len(chosen), desc="retrying shards", unit="shard", disable=not progress)
    try:
        if processes <= 1 or len(chosen) <= 1:
            for sid in sorted(chosen):
                try:
                    _retry_shard(tasks[sid], producer, config)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"shard {shard_name(sid)}: {type(exc).__name__}: {exc}")
                bar.update(1)
        else:
            with process_pool(processes) as pool:
                futures = {pool.submit(_retry_shard, tasks[sid], producer, config): sid for sid in sorted(chosen)}
                for fut in cf.as_completed(futures):
                    try:
                        fut.result()
                    except Exception as exc:  # noqa: BLE001
                        errors.append(f"shard {shard_name(futures[fut])}: {type(exc).__name__}: {exc}")
                    bar.update(1)
    finally:
        bar.close()
    manifest = finalize_dataset(
        config, sources=previous.get("sources"), filters=previous.get("filters"), expected_shards=len(tasks)
    )
    if errors:
        raise RuntimeError("; ".join(errors))
    return RetryResult(
        shards=len(chosen),
        attempted=attempted,
        recovered=manifest["totals"]["samples"] - recovered_before,
        failures_before=dict(before),
        manifest=manifest,
    )


DESCRIPTION = (
    "Fetch again the failed items of a web-sourced dataset (laion, wikipedia) without redoing the rest. By default "
    "the transient reasons are retried: " + ", ".join(TRANSIENT_REASONS) + ". Download options default to those of "
    "the original run."
)


class PlanError(UserError):
    """The dataset folder has no download plan retry can use (not built by a web source, or damaged)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_download_options(p, required=False, engine=False)
    p.add_argument("out", metavar="DIR", help="the dataset folder of the earlier run")
    p.add_argument(
        "--reason",
        action="append",
        metavar="REASON",
        help="retry failures with this reason (repeatable; 'all' for every reason)",
    )
    p.add_argument("--list", action="store_true", help="only show the failures by reason")
    p.add_argument("--processes", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        items, config, recorded = read_plan(args.out)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise PlanError(str(exc)) from None
    if args.list:
        counts = Counter()
        for sid in completed_shard_ids(config):
            counts.update((read_shard_stats(config.out_dir, config.sizes[0], sid) or {}).get("failures", {}))
        for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            mark = " (retried by default)" if reason in TRANSIENT_REASONS else ""
            print(f"{reason}: {n}{mark}")
        return 0
    reasons = None if args.reason and "all" in args.reason else set(args.reason or TRANSIENT_REASONS)
    with exit_status_1():
        options = options_from_args(args, source=recorded.source, base=recorded)
    try:
        result = retry_failed(args.out, reasons, options, processes=args.processes, progress=not args.no_progress)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    m = result.manifest
    print(
        f"{args.out}: retried {result.attempted} failed items in {result.shards} shards, "
        f"recovered {result.recovered}; now {m['totals']['samples']} samples, {m['totals']['failed']} failed"
    )
    if m["failures"]:
        print("failures by reason: " + ", ".join(f"{k}={v}" for k, v in m["failures"].items()))
    return 0
