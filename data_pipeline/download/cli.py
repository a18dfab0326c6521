"""Command-line options shared by the web sources (laion, wikipedia, retry) and the download step."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os

from data_pipeline.cli import OptionError, report_build, run_build
from data_pipeline.distributed import build_dataset_on_ray
from data_pipeline.shards import WriterConfig

from .client import DEFAULT_USER_AGENT, DEFAULT_USER_AGENT_TOKEN, ClientConfig
from .downloader import DownloadOptions, DownloadProducer, download_plan_tasks, write_plan
from .robots import DEFAULT_DISALLOWED_DIRECTIVES
from .url_safety import AddressPolicy


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("must be positive")
        return value

    return parse


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip().lower() for p in text.split(",") if p.strip())


_DEFAULTS = {
    "threads": 16,
    "connect_timeout": 5.0,
    "timeout": 10.0,
    "max_time": 60.0,
    "retries": 2,
    "max_image_bytes": 32 * 1024 * 1024,
    "shard_deadline": None,
    "per_domain_concurrency": None,
    "per_domain_rate": None,
}


def add_download_options(
    parser: argparse.ArgumentParser, defaults: dict | None = None, required: bool = True, engine: bool = True
) -> None:
    """The fetching options, in an argument group of `parser`. ``required=False`` (retry) leaves every default
    as None so only flags the user gives override the recorded ones; ``engine`` adds --ray."""
    values = {**_DEFAULTS, **(defaults or {})}
    shown = {k: "none" if v is None else v for k, v in values.items()}
    if not required:
        values = {k: None for k in values}
        shown = {k: "as in the original run" for k in values}
    group = parser.add_argument_group("downloading")
    _add_timing_options(group, values, shown)
    _add_size_and_rate_options(group, values, shown)
    _add_address_and_robots_options(group, required)
    if engine:
        _add_engine_options(group)


def _add_timing_options(group, values: dict, shown: dict) -> None:
    group.add_argument(
        "--threads",
        type=_positive(int),
        default=values["threads"],
        help=f"concurrent downloads per process (default: {shown['threads']})",
    )
    group.add_argument(
        "--connect-timeout",
        type=_positive(float),
        default=values["connect_timeout"],
        help=f"seconds to open a connection (default: {shown['connect_timeout']})",
    )
    group.add_argument(
        "--timeout",
        type=_positive(float),
        default=values["timeout"],
        help=f"seconds of silence before a download is abandoned (default: {shown['timeout']})",
    )
    group.add_argument(
        "--max-time",
        type=_positive(float),
        default=values["max_time"],
        help=f"seconds one download may take in all (default: {shown['max_time']})",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=values["retries"],
        help=f"extra tries after HTTP 429/5xx or a dropped connection, with backoff; "
        f"Retry-After is honoured (default: {shown['retries']})",
    )


def _add_size_and_rate_options(group, values: dict, shown: dict) -> None:
    group.add_argument(
        "--max-image-bytes",
        type=_positive(int),
        default=values["max_image_bytes"],
        help=f"larger responses are dropped (default: {shown['max_image_bytes']})",
    )
    group.add_argument(
        "--shard-deadline",
        type=_positive(float),
        default=values["shard_deadline"],
        help="seconds a shard may take; URLs still unfinished then fail with reason "
        "'deadline' (fetch them later with retry) (default: none)",
    )
    group.add_argument(
        "--per-domain-concurrency",
        type=_positive(int),
        default=values["per_domain_concurrency"],
        help="at most this many downloads in flight per host, over all processes "
        f"(default: {shown['per_domain_concurrency']})",
    )
    group.add_argument(
        "--per-domain-rate",
        type=_positive(float),
        default=values["per_domain_rate"],
        help="at most this many requests per second per host, over all processes "
        f"(default: {shown['per_domain_rate']})",
    )


def _add_address_and_robots_options(group, required: bool) -> None:
    group.add_argument(
        "--allow-private-addresses",
        action="store_true",
        default=None if not required else False,
        help="also fetch from loopback/private/link-local addresses (refused by default)",
    )
    group.add_argument(
        "--allow-network",
        action="append",
        metavar="CIDR",
        default=None,
        help="allow this address range although it is not public, e.g. 127.0.0.0/8 (repeatable)",
    )
    group.add_argument(
        "--user-agent",
        default=None if not required else DEFAULT_USER_AGENT,
        help="User-Agent header (default: an autocomics string)",
    )
    group.add_argument(
        "--user-agent-token",
        default=None if not required else DEFAULT_USER_AGENT_TOKEN,
        help=f"our bot name in 'name: directive' X-Robots-Tag values (default: {DEFAULT_USER_AGENT_TOKEN})",
    )
    group.add_argument(
        "--disallowed-directives",
        type=_csv,
        default=None,
        help=f"X-Robots-Tag directives that make us skip an image (default: {','.join(DEFAULT_DISALLOWED_DIRECTIVES)})",
    )
    group.add_argument(
        "--ignore-robots-tag",
        action="store_true",
        default=None if not required else False,
        help="do not check X-Robots-Tag at all",
    )


def _add_engine_options(group) -> None:
    group.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="run the shards on Ray instead of local processes: 'local' starts a local "
        "instance, 'auto' or ray://HOST:PORT joins a cluster (needs the ray extra)",
    )
    group.add_argument(
        "--ray-cpus", type=_positive(int), default=None, help="CPUs of the local Ray instance (default: all)"
    )


def _workers(args) -> int:
    if getattr(args, "ray", None):
        return getattr(args, "ray_cpus", None) or 1
    return max(1, getattr(args, "processes", 1) or 1)


def options_from_args(args, source: str, base: DownloadOptions | None = None) -> DownloadOptions:
    """Build download options from flags; with ``base`` (retry), unset flags keep base's values.

    Per-domain limits are for the whole run, so each process gets its share.
    """
    base = base or DownloadOptions()
    c = base.client

    def pick(name, current):
        value = getattr(args, name, None)
        return current if value is None else value

    workers = _workers(args)
    conc = getattr(args, "per_domain_concurrency", None)
    rate = getattr(args, "per_domain_rate", None)
    networks = tuple(args.allow_network) if getattr(args, "allow_network", None) else c.address_policy.allowed_networks
    try:
        policy = AddressPolicy(bool(pick("allow_private_addresses", c.address_policy.allow_private)), networks)
    except ValueError as exc:
        raise OptionError(f"--allow-network: {exc}") from None
    client = ClientConfig(
        user_agent=pick("user_agent", c.user_agent),
        connect_timeout=pick("connect_timeout", c.connect_timeout),
        read_timeout=pick("timeout", c.read_timeout),
        total_timeout=pick("max_time", c.total_timeout),
        max_bytes=pick("max_image_bytes", c.max_bytes),
        retries=pick("retries", c.retries),
        address_policy=policy,
        pool_maxsize=max(c.pool_maxsize, pick("threads", base.threads)),
        per_domain_concurrency=math.ceil(conc / workers) if conc else c.per_domain_concurrency,
        per_domain_rate=rate / workers if rate else c.per_domain_rate,
    )
    directives = base.robots_directives
    if getattr(args, "disallowed_directives", None) is not None:
        directives = args.disallowed_directives
    if getattr(args, "ignore_robots_tag", None):
        directives = ()
    try:
        return DownloadOptions(
            client=client,
            threads=pick("threads", base.threads),
            shard_deadline=pick("shard_deadline", base.shard_deadline),
            robots_directives=directives,
            user_agent_token=pick("user_agent_token", base.user_agent_token),
            source=source,
        )
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def run_download(
    args,
    items_path: str,
    writer: WriterConfig,
    options: DownloadOptions,
    sources: list[dict],
    filters: dict | None = None,
) -> int:
    """Download an item table into shards with the local pool or Ray; print a summary."""
    write_plan(writer, options, items_path)
    tasks = download_plan_tasks(items_path, writer)
    producer = DownloadProducer(options, writer)
    if not getattr(args, "ray", None):
        return run_build(args, tasks, producer, sources, filters, config=writer)
    writer = dataclasses.replace(writer, out_dir=os.path.abspath(writer.out_dir))  # Ray workers' cwd differs
    producer = DownloadProducer(options, writer)
    summary, manifest = build_dataset_on_ray(
        tasks,
        producer,
        writer,
        address=args.ray,
        num_cpus=args.ray_cpus,
        progress=not args.no_progress,
        sources=sources,
        filters=filters,
    )
    return report_build(writer, summary, manifest)
