"""A polite, bounded HTTP client on requests: pooling, timeouts, size caps, retries, safe addresses."""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from .limits import DeadlineExceeded, DomainLimiter
from .url_safety import AddressPolicy, BlockedURL, SafeHTTPAdapter, check_scheme

DEFAULT_USER_AGENT_TOKEN = "autocomics"
DEFAULT_USER_AGENT = (
    f"{DEFAULT_USER_AGENT_TOKEN}/0.1 (dataset builder for text-to-image fine-tuning; "
    "honours X-Robots-Tag noai/noimageai)"
)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class FetchError(Exception):
    """A failed fetch; ``reason`` is a short stable label used to count failures."""

    def __init__(self, reason: str, detail: str = "", status: int | None = None, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.status = status
        self.retry_after = retry_after


@dataclass
class FetchResult:
    url: str  # the URL asked for
    final_url: str  # after redirects
    status: int
    content: bytes
    headers: dict[str, str]
    robots_tags: list[str]  # every X-Robots-Tag header, unmerged


@dataclass(frozen=True)
class ClientConfig:
    user_agent: str = DEFAULT_USER_AGENT
    connect_timeout: float = 5.0
    read_timeout: float = 10.0  # longest silence between bytes
    total_timeout: float = 60.0  # longest a single response may take end to end
    max_bytes: int = 32 * 1024 * 1024
    retries: int = 2  # extra tries after 429/5xx or a dropped connection
    backoff: float = 0.5  # first retry pause; doubles each time, with jitter
    max_backoff: float = 30.0
    max_retry_after: float = 120.0  # a longer Retry-After gives up instead of waiting
    max_redirects: int = 5
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)
    pool_maxsize: int = 32
    per_domain_concurrency: int | None = None
    per_domain_rate: float | None = None  # request starts per second per host

    def to_dict(self) -> dict:
        d = asdict(self)
        d["address_policy"]["allowed_networks"] = list(self.address_policy.allowed_networks)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "ClientConfig":
        data = dict(data)
        policy = data.pop("address_policy", {}) or {}
        policy = AddressPolicy(policy.get("allow_private", False), tuple(policy.get("allowed_networks", ())))
        return cls(address_policy=policy, **data)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class HttpClient:
    """Thread-safe: one requests.Session (a connection pool per host) shared by all threads."""

    def __init__(self, config: ClientConfig | None = None, limiter: DomainLimiter | None = None):
        self.config = config or ClientConfig()
        self.limiter = limiter or DomainLimiter(self.config.per_domain_concurrency, self.config.per_domain_rate)
        self.session = requests.Session()
        self.session.trust_env = False  # no env proxies: the address check must see the real peer
        self.session.headers["User-Agent"] = self.config.user_agent
        adapter = SafeHTTPAdapter(
            self.config.address_policy,
            pool_connections=64,
            pool_maxsize=self.config.pool_maxsize,
            max_retries=0,
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def get(
        self,
        url: str,
        params: dict | None = None,
        deadline: float | None = None,
        max_bytes: int | None = None,
        sink=None,
        total_timeout: float | None = None,
    ) -> FetchResult:
        """GET with retries; returns a 2xx result or raises FetchError.

        With ``sink`` (a binary file object) the body is written there instead of kept in memory
        (``content`` is then empty); a retry truncates the sink first.
        """
        if params:
            url = requests.Request("GET", url, params=params).prepare().url
        cfg = self.config
        attempt = 0
        while True:
            try:
                if sink is not None:
                    sink.seek(0)
                    sink.truncate()
                return self._get_once(
                    url, deadline, max_bytes or cfg.max_bytes, sink, total_timeout or cfg.total_timeout
                )
            except FetchError as err:
                wait = self._retry_wait(err, attempt)
                if wait is None:
                    raise
                if deadline is not None and time.monotonic() + wait > deadline:
                    raise FetchError("deadline", f"retry of {err.reason} would pass the deadline") from None
                host = urlsplit(url).hostname or ""
                if err.status in (429, 503):
                    self.limiter.defer(host, wait)
                time.sleep(wait)
                attempt += 1

    def _retry_wait(self, err: FetchError, attempt: int) -> float | None:
        cfg = self.config
        if attempt >= cfg.retries:
            return None
        retryable = err.status in RETRY_STATUSES or err.reason in ("connection_error", "incomplete_body")
        if not retryable:
            return None
        if err.retry_after is not None:
            return err.retry_after if err.retry_after <= cfg.max_retry_after else None
        with self._rng_lock:
            jitter = self._rng.uniform(0.5, 1.0)
        return min(cfg.max_backoff, cfg.backoff * (2**attempt)) * jitter

    def _get_once(self, url: str, deadline: float | None, max_bytes: int, sink, total_timeout: float) -> FetchResult:
        visited = []
        current = url
        while True:
            try:
                check_scheme(current)
            except BlockedURL as exc:
                raise FetchError(exc.reason, exc.detail) from None
            if current in visited:
                raise FetchError("redirect_loop", f"{current} was already visited")
            if len(visited) > self.config.max_redirects:
                raise FetchError("too_many_redirects", f"more than {self.config.max_redirects} redirects")
            visited.append(current)
            status, headers, robots, content, location = self._request(
                current, deadline, max_bytes, sink, total_timeout
            )
            if status in _REDIRECT_STATUSES and location:
                current = urljoin(current, location)
                continue
            if 200 <= status < 300:
                return FetchResult(url, current, status, content, headers, robots)
            raise FetchError(
                f"http_{status}",
                f"HTTP {status} from {current}",
                status=status,
                retry_after=parse_retry_after(headers.get("retry-after")),
            )

    def _request(self, url: str, deadline: float | None, max_bytes: int, sink, total_timeout: float):
        cfg = self.config
        host = urlsplit(url).hostname or ""
        started = time.monotonic()
        stop = started + total_timeout
        if deadline is not None:
            stop = min(stop, deadline)
        try:
            with self.limiter.slot(host, deadline):
                remaining = stop - time.monotonic()
                if remaining <= 0:
                    raise FetchError("deadline", "no time left before the deadline")
                timeout = (min(cfg.connect_timeout, remaining), min(cfg.read_timeout, remaining))
                with self.session.get(url, stream=True, timeout=timeout, allow_redirects=False) as resp:
                    headers = {k.lower(): v for k, v in resp.headers.items()}
                    robots = list(resp.raw.headers.getlist("x-robots-tag"))
                    status = resp.status_code
                    location = headers.get("location")
                    if not (200 <= status < 300):
                        return status, headers, robots, b"", location
                    declared = headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise FetchError("too_large", f"declared {declared} bytes > limit {max_bytes}")
                    content = self._read_body(resp, max_bytes, stop, deadline, sink)
                    return status, headers, robots, content, location
        except DeadlineExceeded as exc:
            raise FetchError("deadline", str(exc)) from None
        except BlockedURL as exc:
            raise FetchError(exc.reason, exc.detail) from None
        except requests.exceptions.Timeout as exc:
            raise FetchError("timeout", _short(exc)) from None
        except requests.exceptions.TooManyRedirects as exc:
            raise FetchError("too_many_redirects", _short(exc)) from None
        except (requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError) as exc:
            raise FetchError("bad_encoding", _short(exc)) from None
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
        ) as exc:
            if _caused_by_timeout(exc):
                raise FetchError("timeout", _short(exc)) from None
            if "IncompleteRead" in str(exc):
                raise FetchError("incomplete_body", _short(exc)) from None
            raise FetchError("connection_error", _short(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise FetchError("request_error", _short(exc)) from None

    @staticmethod
    def _read_body(resp, max_bytes: int, stop: float, deadline: float | None, sink) -> bytes:
        # read1 returns whatever one socket read gives, so a server that drips bytes slowly
        # cannot hold us past ``stop`` by keeping a large read() from completing.
        chunks, size = [], 0
        while True:
            chunk = resp.raw.read1(64 * 1024, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise FetchError("too_large", f"body exceeds {max_bytes} bytes")
            if sink is not None:
                sink.write(chunk)
            else:
                chunks.append(chunk)
            if time.monotonic() > stop:
                reason = "deadline" if deadline is not None and time.monotonic() > deadline else "timeout"
                raise FetchError(reason, "response took longer than allowed")
        return b"".join(chunks)


def _caused_by_timeout(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, urllib3.exceptions.NewConnectionError):
            return False  # urllib3 makes it a ConnectTimeoutError subclass, but it is a refusal
        if isinstance(exc, (TimeoutError, urllib3.exceptions.TimeoutError)):
            return True
        nested = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = getattr(exc, "reason", None) or exc.__cause__ or exc.__context__ or nested
    return False


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."
