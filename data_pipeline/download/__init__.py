"""Fetching web images safely and politely, and turning item lists into shards.

- ``url_safety``: http(s) only; connections to private/loopback/link-local addresses refused.
- ``client``: requests-based client (pooling, timeouts, size cap, retries honouring Retry-After).
- ``limits``: per-domain concurrency and rate limits.
- ``robots``: X-Robots-Tag opt-outs (noai, noimageai, noindex, noimageindex).
- ``items``: the item table (url, caption, metadata) every web source writes before downloading.
- ``downloader``: shard tasks over an item table, fetched by threads, written by the shard writer.
- ``retry``: fetch again the failed samples of an earlier run, by reason (the ``retry`` command).
- ``cli``: the download options shared by the ``laion``, ``wikipedia`` and ``retry`` commands.
"""

from .client import ClientConfig, FetchError, FetchResult, HttpClient
from .limits import DomainLimiter
from .robots import DEFAULT_DISALLOWED_DIRECTIVES, disallowed_by_robots_tag
from .url_safety import AddressPolicy, BlockedURL

__all__ = [
    "AddressPolicy",
    "BlockedURL",
    "ClientConfig",
    "DEFAULT_DISALLOWED_DIRECTIVES",
    "DomainLimiter",
    "FetchError",
    "FetchResult",
    "HttpClient",
    "disallowed_by_robots_tag",
]
