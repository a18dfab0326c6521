"""Run shard tasks in a process pool with a progress bar, skipping shards already complete.

`build_dataset` = `run_shard_tasks` (write the pending shards) + `finalize_dataset`
(near-duplicate removal when enabled, then manifest.json). A distributed engine can replace
`run_shard_tasks` by calling `shards.write_shard` per task and then `finalize_dataset`.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import queue as queue_module
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from data_pipeline.shards import (
    Failure,
    Sample,
    ShardTask,
    WriterConfig,
    pending_tasks,
    remove_near_duplicates,
    shard_name,
    write_manifest,
    write_shard,
)
from data_pipeline.workers import process_pool

Produce = Callable[[ShardTask], Iterable[Sample | Failure]]


@dataclass
class RunSummary:
    shards_total: int = 0
    shards_skipped: int = 0  # already complete (resume)
    shards_written: int = 0
    samples: int = 0
    failed: int = 0
    failures: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # shards that raised; rerun to redo them
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, stats: dict) -> None:
        self.shards_written += 1
        self.samples += stats["successes"]
        self.failed += stats["failed"]
        self.failures.update(stats["failures"])


# Worker-side progress: records are counted locally and sent in small batches.
_progress_queue = None


def _init_worker(progress_queue) -> None:
    global _progress_queue
    _progress_queue = progress_queue


class _BatchedCounter:
    def __init__(self, sink: Callable[[int, int], None], interval: float = 0.25):
        self.sink, self.interval = sink, interval
        self.ok = self.bad = 0
        self.last = time.monotonic()

    def __call__(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.bad += 1
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.ok or self.bad:
            self.sink(self.ok, self.bad)
        self.ok = self.bad = 0
        self.last = time.monotonic()


def _write_in_worker(task: ShardTask, produce: Produce, config: WriterConfig) -> dict:
    counter = _BatchedCounter(lambda ok, bad: _progress_queue.put((ok, bad)))
    try:
        return write_shard(task, produce, config, on_record=counter)
    finally:
        counter.flush()


def run_shard_tasks(
    tasks: Sequence[ShardTask],
    produce: Produce,
    config: WriterConfig,
    processes: int = 1,
    progress: bool = True,
    desc: str = "samples",
) -> RunSummary:
    """Write every task's shard that is not complete yet. `produce` must be picklable when
    processes > 1 (a module-level function or a functools.partial of one)."""
    started = time.time()
    summary = RunSummary(shards_total=len(tasks))
    pending = pending_tasks(tasks, config)
    summary.shards_skipped = len(tasks) - len(pending)
    bar = tqdm(total=sum(len(t) for t in pending), desc=desc, unit="img", disable=not progress, smoothing=0.1)
    live = Counter()

    def show(ok: int, bad: int) -> None:
        live["ok"] += ok
        live["failed"] += bad
        bar.update(ok + bad)
        bar.set_postfix(
            ok=live["ok"], failed=live["failed"], shards=f"{summary.shards_written}/{len(pending)}", refresh=False
        )

    try:
        if processes <= 1 or len(pending) <= 1:
            for task in pending:
                counter = _BatchedCounter(show, interval=0.1)
                try:
                    summary.add(write_shard(task, produce, config, on_record=counter))
                except Exception as exc:  # noqa: BLE001 -- one bad shard must not stop the run
                    summary.errors.append(f"shard {shard_name(task.shard_id)}: {type(exc).__name__}: {exc}")
                finally:
                    counter.flush()
                    show(0, 0)
        else:
            _run_in_pool(pending, produce, config, processes, summary, show)
    finally:
        bar.close()
    summary.duration = time.time() - started
    return summary


def _run_in_pool(pending, produce, config, processes, summary, show) -> None:
    ctx = mp.get_context()
    progress_queue = ctx.Queue()
    with process_pool(processes, mp_context=ctx, initializer=_init_worker, initargs=(progress_queue,)) as pool:
        futures = {pool.submit(_write_in_worker, t, produce, config): t for t in pending}
        try:
            remaining = set(futures)
            while remaining:
                done, remaining = cf.wait(remaining, timeout=0.1)
                _drain(progress_queue, show)
                for fut in done:
                    task = futures[fut]
                    try:
                        summary.add(fut.result())
                    except Exception as exc:  # noqa: BLE001
                        summary.errors.append(f"shard {shard_name(task.shard_id)}: {type(exc).__name__}: {exc}")
                    show(0, 0)
            _drain(progress_queue, show)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _drain(progress_queue, show) -> None:
    while True:
        try:
            ok, bad = progress_queue.get_nowait()
        except queue_module.Empty:
            return
        show(ok, bad)


def finalize_dataset(
    config: WriterConfig,
    sources: list[dict] | None = None,
    filters: dict | None = None,
    expected_shards: int | None = None,
) -> dict:
    """Remove near-duplicates (when config.dedupe_distance is set) and write manifest.json."""
    remove_near_duplicates(config)
    return write_manifest(config, sources=sources, filters=filters, expected_shards=expected_shards)


def build_dataset(
    tasks: Sequence[ShardTask],
    produce: Produce,
    config: WriterConfig,
    processes: int = 1,
    progress: bool = True,
    sources: list[dict] | None = None,
    filters: dict | None = None,
) -> tuple[RunSummary, dict]:
    """Write all shards (resuming) and the manifest; returns the run summary and the manifest."""
    summary = run_shard_tasks(tasks, produce, config, processes=processes, progress=progress)
    manifest = finalize_dataset(config, sources=sources, filters=filters, expected_shards=len(tasks))
    return summary, manifest
