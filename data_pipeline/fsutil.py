"""Atomic file and folder writes: nothing we write (shards, checkpoints, model folders, images) is ever seen
half-written. Every temp-file-then-rename in the three packages goes through here."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from data_pipeline.oserrors import naming_path

# How the writers of safetensors ("I/O error: No space left on device (os error 28)") and torch.save
# ("PytorchStreamWriter failed writing file ...", "[enforce fail at inline_container.cc] unexpected pos") report a
# failed write.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_TORCH_WRITE_FAILED = re.compile(r"PytorchStreamWriter|inline_container")


def fsync_dir(path: str | Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def disk_writes(path: str | Path) -> Iterator[None]:
    """Writes to `path` inside fail with an OSError naming it, however the writing library words the failure."""
    with naming_path(path):
        try:
            yield
        except OSError:
            raise
        except Exception as exc:
            failure = _as_os_error(exc, path)
            if failure is None:
                raise
            raise failure from exc


def _as_os_error(exc: Exception, path: str | Path) -> OSError | None:
    found = _RUST_OS_ERROR.search(str(exc))
    if found:
        code = int(found.group(1))
        return OSError(code, os.strerror(code), os.fspath(path))
    if _TORCH_WRITE_FAILED.search(str(exc)):  # torch does not say why: the disk is the usual suspect
        return OSError(errno.EIO, "the write failed (is the disk full?)", os.fspath(path))
    return None


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside `path`, then rename it over `path`.

    The file gets the usual permissions for a new file (mkstemp alone would leave it owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with disk_writes(path):
            write(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, _default_file_mode())
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write `data` as UTF-8 JSON (non-ASCII kept as is) with a trailing newline, atomically."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def publish_dir(tmp_dir: str | Path, final_dir: str | Path) -> None:
    """Move a fully written folder into place (replacing an older one of the same name)."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    for f in tmp_dir.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if final_dir.exists():
        trash = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, trash)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks (checkpoints are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
