"""Process pools whose workers end when the process that started them dies.

A killed job (`kill -9`, the OOM killer, a lost terminal) must not leave its workers downloading and writing shards
on their own. On Linux the kernel sends each worker SIGKILL when its parent dies (`PR_SET_PDEATHSIG`); everywhere, a
watchdog thread in each worker also notices that its parent has changed (the orphan was adopted) and exits. Shard
writes are atomic, so a worker killed mid-shard leaves only a temporary file that the next run removes.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WATCHDOG_INTERVAL = 0.5  # seconds between two looks at the parent


def process_pool(
    processes: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    **kwargs,
) -> cf.ProcessPoolExecutor:
    """A `ProcessPoolExecutor` whose workers exit when this process dies, then run `initializer(*initargs)`."""
    return cf.ProcessPoolExecutor(
        processes, initializer=_init_worker, initargs=(os.getpid(), initializer, initargs), **kwargs
    )


def _init_worker(parent_pid: int, initializer, initargs: tuple) -> None:
    exit_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def exit_with_parent(parent_pid: int) -> None:
    """End this process when `parent_pid` (the process that started the pool) dies.

    The process watched is this one's parent at the time of the call: `parent_pid` itself, or under the forkserver
    start method the fork server, which exits when `parent_pid` does.
    """
    _arm_parent_death_signal()
    watched = os.getppid()
    if watched != parent_pid and not _is_alive(parent_pid):  # it died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(watched,), name="parent-watchdog", daemon=True).start()


def _arm_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no usable libc: the watchdog still covers it
        pass


def _watch_parent(watched: int) -> None:
    while os.getppid() == watched:
        time.sleep(WATCHDOG_INTERVAL)
    os._exit(1)


def _is_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
