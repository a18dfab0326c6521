"""Run shard tasks on a Ray cluster instead of the local process pool.

Each pending shard becomes one Ray task calling ``shards.write_shard``; the driver then writes the
manifest with ``runner.finalize_dataset``. Workers write straight into the output folder and read
the inputs (e.g. an item table) by path, so on a multi-node cluster both must be on storage every
node sees, and every node needs this package installed. Ray is an optional extra:
``pip install "autocomics[ray]"``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tqdm import tqdm

from data_pipeline.runner import Produce, RunSummary, finalize_dataset
from data_pipeline.shards import ShardTask, WriterConfig, shard_is_complete, shard_name, write_shard


def _import_ray():
    try:
        import ray  # lazy on purpose: Ray is an optional extra (autocomics[ray])
    except ImportError:
        raise RuntimeError('Ray is not installed; install the extra: pip install "autocomics[ray]"') from None
    return ray


def _write_one(task: ShardTask, produce: Produce, config: WriterConfig) -> dict:
    return write_shard(task, produce, config)


def run_shard_tasks_on_ray(
    tasks: Sequence[ShardTask],
    produce: Produce,
    config: WriterConfig,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
) -> RunSummary:
    """Write every pending shard as a Ray task (a rerun skips complete shards, as locally).

    ``address``: None or "local" starts a private local Ray instance (``num_cpus`` caps it) and
    stops it afterwards; "auto" or "ray://host:port" joins an existing cluster. When Ray is
    already initialised in this process, that instance is used as it is.
    """
    ray = _import_ray()
    started = time.time()
    summary = RunSummary(shards_total=len(tasks))
    pending = [t for t in tasks if not shard_is_complete(config, t.shard_id)]
    summary.shards_skipped = len(tasks) - len(pending)
    if not pending:
        summary.duration = time.time() - started
        return summary
    own_instance = not ray.is_initialized()
    if own_instance:
        if address in (None, "local"):
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        remote_write = ray.remote(num_cpus=1, max_retries=0)(_write_one)
        produce_ref = ray.put(produce)
        refs = {remote_write.remote(task, produce_ref, config): task for task in pending}
        bar = tqdm(total=sum(len(t) for t in pending), desc="samples (ray)", unit="img", disable=not progress)
        try:
            waiting = list(refs)
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                for ref in done:
                    task = refs[ref]
                    try:
                        summary.add(ray.get(ref))
                    except Exception as exc:  # noqa: BLE001 -- one bad shard must not stop the run
                        summary.errors.append(f"shard {shard_name(task.shard_id)}: {type(exc).__name__}: {exc}")
                    bar.update(len(task))
                    bar.set_postfix(ok=summary.samples, failed=summary.failed, refresh=False)
        finally:
            bar.close()
    finally:
        if own_instance:
            ray.shutdown()
    summary.duration = time.time() - started
    return summary


def build_dataset_on_ray(
    tasks: Sequence[ShardTask],
    produce: Produce,
    config: WriterConfig,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    sources: list[dict] | None = None,
    filters: dict | None = None,
) -> tuple[RunSummary, dict]:
    summary = run_shard_tasks_on_ray(tasks, produce, config, address=address, num_cpus=num_cpus, progress=progress)
    manifest = finalize_dataset(config, sources=sources, filters=filters, expected_shards=len(tasks))
    return summary, manifest
