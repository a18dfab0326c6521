"""One-line messages for file-system faults (full or read-only disk, a file where a folder should be, ...).

The commands of every package (`python -m data_pipeline | finetune | sampling`) catch `OSError` at the top level and
print `error: <this message>` instead of a traceback; it lives here because data_pipeline is the package the other
two may import. Writes are atomic, so such a fault leaves the earlier outputs as they were.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager


def describe_os_error(exc: OSError) -> str:
    """'PATH: reason' (both paths for a rename), with a hint where the system's reason is cryptic."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _hint(exc)
    if hint:
        reason = f"{reason} ({hint})"
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def _hint(exc: OSError) -> str | None:
    if exc.errno == errno.ENOTDIR:
        return "a folder on this path is a file"
    if exc.errno == errno.EISDIR:
        return "a folder is where a file should go"
    if exc.errno == errno.EEXIST and exc.filename is not None and not os.path.isdir(exc.filename):
        return "a file is where a folder should go"  # os.makedirs(exist_ok=True) on a file
    return None


@contextmanager
def naming_path(path: str | os.PathLike) -> Iterator[None]:
    """Give `path` to an OSError raised inside that does not say which file failed (a write() on a full disk)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # not e.g. a network error (also an OSError)
            exc.filename = os.fspath(path)
        raise
