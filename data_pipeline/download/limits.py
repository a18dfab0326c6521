"""Per-domain politeness inside one process: at most N requests in flight and R requests per second."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager


class DeadlineExceeded(Exception):
    """Waiting for a turn would run past the caller's deadline."""


class DomainLimiter:
    """Per-host concurrency cap and minimum spacing between request starts.

    ``defer(host, seconds)`` pushes the next allowed start back, so one thread honouring a
    ``Retry-After`` makes every thread pause for that host.
    """

    def __init__(self, max_concurrency: int | None = None, max_rate: float | None = None):
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("per-domain concurrency must be at least 1")
        if max_rate is not None and max_rate <= 0:
            raise ValueError("per-domain rate must be positive")
        self.max_concurrency = max_concurrency
        self.interval = 1.0 / max_rate if max_rate else 0.0
        self._lock = threading.Lock()
        self._semaphores: dict[str, threading.Semaphore] = {}
        self._next_start: dict[str, float] = {}

    def defer(self, host: str, seconds: float) -> None:
        with self._lock:
            until = time.monotonic() + seconds
            if until > self._next_start.get(host, 0.0):
                self._next_start[host] = until

    def _reserve_start(self, host: str) -> float:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start.get(host, 0.0))
            if self.interval:
                self._next_start[host] = start + self.interval
            return start

    @contextmanager
    def slot(self, host: str, deadline: float | None = None):
        semaphore = None
        if self.max_concurrency:
            with self._lock:
                semaphore = self._semaphores.setdefault(host, threading.Semaphore(self.max_concurrency))
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not semaphore.acquire(timeout=wait):
                raise DeadlineExceeded(f"no free connection slot for {host} before the deadline")
        try:
            start = self._reserve_start(host)
            if deadline is not None and start > deadline:
                raise DeadlineExceeded(f"rate limit for {host} leaves no turn before the deadline")
            pause = start - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            yield
        finally:
            if semaphore is not None:
                semaphore.release()
