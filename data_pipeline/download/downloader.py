"""Download an item table into shards: threads fetch and decode, the shard writer resizes and writes.

Each shard task is one row range of the item table. Inside a task a bounded window of threads
fetches, checks X-Robots-Tag and decodes; results go to the writer as they complete (it puts them
back in key order). Processes across cores come from ``data_pipeline.runner`` (or Ray, see
``data_pipeline.distributed``). A shard deadline closes the shard with its unfinished URLs
counted as ``deadline`` failures, which ``retry`` can fetch again later.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from data_pipeline import images
from data_pipeline.distributed import build_dataset_on_ray
from data_pipeline.fsutil import atomic_write_json
from data_pipeline.runner import RunSummary, build_dataset
from data_pipeline.shards import EMPTY_CAPTION, Failure, Sample, ShardTask, WriterConfig

from .client import DEFAULT_USER_AGENT_TOKEN, ClientConfig, FetchError, HttpClient
from .items import STANDARD_COLUMNS, plan_item_shards, table_metadata
from .robots import DEFAULT_DISALLOWED_DIRECTIVES, disallowed_by_robots_tag

PLAN_FILE = "download_plan.json"
DEADLINE = "deadline"
ROBOTS_TAG = "x_robots_tag"
MISSING_URL = "missing_url"
UNEXPECTED_ERROR = "unexpected_error"


@dataclass(frozen=True)
class DownloadOptions:
    client: ClientConfig = field(default_factory=ClientConfig)
    threads: int = 16  # concurrent fetches per process
    shard_deadline: float | None = None  # seconds; unfinished URLs then fail with reason "deadline"
    robots_directives: tuple[str, ...] = DEFAULT_DISALLOWED_DIRECTIVES  # () disables the check
    user_agent_token: str = DEFAULT_USER_AGENT_TOKEN
    source: str = "web"

    def __post_init__(self):
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.shard_deadline is not None and self.shard_deadline <= 0:
            raise ValueError("shard deadline must be positive")
        object.__setattr__(self, "robots_directives", tuple(self.robots_directives))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["client"] = self.client.to_dict()
        d["robots_directives"] = list(self.robots_directives)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "DownloadOptions":
        data = dict(data)
        client = ClientConfig.from_dict(data.pop("client", {}))
        return cls(client=client, **{**data, "robots_directives": tuple(data.get("robots_directives", ()))})


# One client per process and configuration, so connection pools survive from shard to shard.
_clients: dict[tuple[int, ClientConfig], HttpClient] = {}
_clients_lock = threading.Lock()


def shared_client(config: ClientConfig) -> HttpClient:
    # Keyed by pid too: a forked worker must not reuse its parent's sockets.
    key = (os.getpid(), config)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = HttpClient(config)
        return client


@dataclass(frozen=True)
class DownloadProducer:
    """The picklable ``produce(task)`` for the shard writer.

    ``only``: shard id -> item indices to fetch (used by retry); other items are not yielded.
    """

    options: DownloadOptions
    writer: WriterConfig
    only: dict[int, frozenset[int]] | None = None

    def __call__(self, task: ShardTask) -> Iterator[Sample | Failure]:
        rows = task.items.load() if hasattr(task.items, "load") else list(task.items)
        indices = list(range(len(rows)))
        if self.only is not None:
            wanted = self.only.get(task.shard_id, frozenset())
            indices = [i for i in indices if i in wanted]
        opts = self.options
        client_config = opts.client
        if client_config.pool_maxsize < opts.threads:
            client_config = dataclasses.replace(client_config, pool_maxsize=opts.threads)
        client = shared_client(client_config)
        deadline = None if opts.shard_deadline is None else time.monotonic() + opts.shard_deadline
        yield from _fetch_window(indices, rows, client, self, deadline)

    def fetch_one(self, client: HttpClient, row: dict, index: int, deadline: float | None) -> Sample | Failure:
        try:
            return self._fetch_one(client, row, index, deadline)
        except Exception as exc:  # noqa: BLE001 -- one odd URL must not take the shard down
            return Failure(index, UNEXPECTED_ERROR, f"{type(exc).__name__}: {exc}", url=row.get("url"))

    def _fetch_one(self, client: HttpClient, row: dict, index: int, deadline: float | None) -> Sample | Failure:
        url = (row.get("url") or "").strip()
        if not url:
            return Failure(index, MISSING_URL, "row has no URL")
        caption = row.get("caption") or ""
        if not caption.strip() and not any((c or "").strip() for c in row.get("captions") or []):
            return Failure(index, EMPTY_CAPTION, url=url)
        try:
            result = client.get(url, deadline=deadline)
        except FetchError as err:
            return Failure(index, err.reason, err.detail, url=url)
        if self.options.robots_directives:
            directive = disallowed_by_robots_tag(
                result.robots_tags, self.options.user_agent_token, self.options.robots_directives
            )
            if directive:
                return Failure(index, ROBOTS_TAG, f"X-Robots-Tag: {directive}", url=url)
        try:
            rgb, (width, height) = images.decode_image(
                result.content,
                max_pixels=self.writer.max_pixels,
                min_side=self.writer.min_image_side,
                draft_side=self.writer.largest_side,
            )
        except images.ImageError as exc:
            return Failure(index, exc.reason, exc.detail, url=url)
        attributes = {k: v for k, v in row.items() if k not in STANDARD_COLUMNS and v is not None}
        return Sample(
            index=index,
            image=rgb,
            caption=caption,
            captions=row.get("captions") or None,
            source=self.options.source,
            url=url,
            license=row.get("license"),
            attribution=row.get("attribution"),
            similarity=row.get("similarity"),
            attributes=attributes or None,
            width=width,
            height=height,
            group=row.get("group"),
        )


def _fetch_window(indices, rows, client, producer: DownloadProducer, deadline) -> Iterator[Sample | Failure]:
    """Keep at most ~2x threads fetches outstanding (bounded memory); yield in completion order."""
    threads = producer.options.threads
    window = 2 * threads
    todo = iter(indices)
    pool = cf.ThreadPoolExecutor(threads, thread_name_prefix="fetch")
    pending: dict[cf.Future, int] = {}

    def submit_more() -> None:
        while len(pending) < window:
            i = next(todo, None)
            if i is None:
                return
            pending[pool.submit(producer.fetch_one, client, rows[i], i, deadline)] = i

    try:
        submit_more()
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = cf.wait(pending, timeout=timeout, return_when=cf.FIRST_COMPLETED)
            if not done:  # the shard deadline passed
                break
            for fut in done:
                pending.pop(fut)
                yield fut.result()
            submit_more()
        # Deadline: whatever is still running or never started is closed out as failed.
        left = sorted(list(pending.values()) + list(todo))
        for fut in [f for f in pending if f.done()]:
            left.remove(pending[fut])
            yield fut.result()
        for i in left:
            yield Failure(
                i, DEADLINE, "shard deadline reached before this URL finished", url=(rows[i].get("url") or None)
            )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def write_plan(writer: WriterConfig, options: DownloadOptions, items_path: str) -> None:
    """Record what ``retry`` needs to redo failed items of this dataset."""
    os.makedirs(writer.out_dir, exist_ok=True)
    plan = {
        "items": os.path.relpath(os.path.abspath(items_path), os.path.abspath(writer.out_dir)),
        "writer": {**writer.fingerprint(), "dedupe_distance": writer.dedupe_distance},
        "download": options.to_dict(),
    }
    atomic_write_json(os.path.join(writer.out_dir, PLAN_FILE), plan, indent=1)


def read_plan(out_dir: str) -> tuple[str, WriterConfig, DownloadOptions]:
    path = os.path.join(out_dir, PLAN_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            plan = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: {out_dir} was not built by a web source (laion, wikipedia)"
        ) from None
    w = dict(plan["writer"])
    writer = WriterConfig(
        out_dir=out_dir,
        **{**w, "sizes": tuple(w["sizes"]), "pad_color": tuple(w["pad_color"])},
    )
    items = os.path.normpath(os.path.join(out_dir, plan["items"]))
    return items, writer, DownloadOptions.from_dict(plan["download"])


def download_plan_tasks(items_path: str, writer: WriterConfig) -> list[ShardTask]:
    """The shard tasks over an item table (row i -> shard i // shard_size)."""
    meta = table_metadata(items_path) or {}
    if meta.get("shard_size") not in (None, writer.shard_size):
        raise ValueError(
            f"{items_path} was planned with shard size {meta['shard_size']}, not {writer.shard_size}; "
            "use the same --shard-size (or a fresh output folder)"
        )
    # Absolute, so workers whose working directory differs (Ray) find the rows.
    return plan_item_shards(os.path.abspath(items_path), writer.shard_size)


def download_item_table(
    items_path: str,
    writer: WriterConfig,
    options: DownloadOptions,
    processes: int = 1,
    progress: bool = True,
    sources: list[dict] | None = None,
    filters: dict | None = None,
    ray_address: str | None = None,
) -> tuple[RunSummary, dict]:
    """Download every pending shard of an item table (a rerun resumes) and write the manifest.

    ``ray_address``: run the shards on Ray ("local", "auto", "ray://...") instead of processes.
    """
    os.makedirs(writer.out_dir, exist_ok=True)
    write_plan(writer, options, items_path)
    tasks = download_plan_tasks(items_path, writer)
    producer = DownloadProducer(options, writer)
    if ray_address:
        writer = dataclasses.replace(writer, out_dir=os.path.abspath(writer.out_dir))
        return build_dataset_on_ray(
            tasks,
            DownloadProducer(options, writer),
            writer,
            address=ray_address,
            progress=progress,
            sources=sources,
            filters=filters,
        )
    return build_dataset(
        tasks, producer, writer, processes=processes, progress=progress, sources=sources, filters=filters
    )
