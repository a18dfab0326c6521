"""The local cache of released models: each one downloaded once, verified, converted into a model folder and
swapped in whole, then reused (offline too).

Layout under the cache folder (``~/.cache/autocomics``; ``AUTOCOMICS_CACHE`` or a command's ``--cache-dir``
moves it):

- ``models/NAME/`` — converted model folders; a folder is there complete or not at all;
- ``downloads/FILE.part`` — an unfinished download, resumed by the next fetch;
- ``locks/NAME.lock`` — held (fcntl.flock) by the process fetching NAME, so a second one waits for it.
"""

from __future__ import annotations

import contextvars
import errno
import fcntl
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from data_pipeline.fsutil import file_sha256
from data_pipeline.oserrors import describe_os_error

from .download import download
from .errors import HubError, OfflineError, hub_error_from
from .manifest import manifest_entry
from .names import RELEASED_MODELS, download_url, released_model

CACHE_ENV = "AUTOCOMICS_CACHE"
OFFLINE_ENV = "AUTOCOMICS_OFFLINE"
MODELS_DIR, DOWNLOADS_DIR, LOCKS_DIR = "models", "downloads", "locks"


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV, "").strip():
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
    return Path(base).expanduser() / "autocomics"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


_NO_DOWNLOADS = contextvars.ContextVar("autocomics_no_downloads", default=False)


def is_offline() -> bool:
    return _NO_DOWNLOADS.get() or os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def no_downloads() -> Iterator[None]:
    """Inside this block (in this thread), names resolve from the cache only, as with AUTOCOMICS_OFFLINE=1."""
    token = _NO_DOWNLOADS.set(True)
    try:
        yield
    finally:
        _NO_DOWNLOADS.reset(token)


def cached_model_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where NAME's model folder is (or would be) in the cache."""
    released_model(name)
    return cache_root(cache_dir) / MODELS_DIR / name


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def list_cached_models(cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the released models already converted in the cache (for model pickers, e.g. the studio)."""
    return [name for name in RELEASED_MODELS if _is_complete(cached_model_dir(name, cache_dir))]


# ------------------------------------------------------------------------------------------------ locking
def _unwritable(root: Path, exc: OSError) -> HubError:
    return HubError(
        f"cannot write to the model cache {root} ({describe_os_error(exc)}); point {CACHE_ENV} or "
        "--cache-dir at a writable folder"
    )


@contextmanager
def _name_lock(root: Path, name: str) -> Iterator[None]:
    """Hold NAME's lock; when another process holds it, say so and wait for it."""
    lock_path = root / LOCKS_DIR / f"{name}.lock"
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise _unwritable(root, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process fetching {name} (lock {lock_path})", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove_stale_builds(models: Path, name: str) -> None:
    """Half-built folders a killed process left behind (only ever under a hidden name)."""
    for stale in models.glob(f".{name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ fetching
@dataclass
class FetchResult:
    name: str
    path: Path
    downloaded: bool  # False when it was already in the cache


def fetch_model(name: str, cache_dir: str | os.PathLike | None = None, progress: bool | None = None) -> FetchResult:
    """NAME's converted model folder in the cache, downloading, verifying and converting it first if needed."""
    from .convert import convert_release  # torch loads only when a conversion is needed

    root = cache_root(cache_dir)
    folder = cached_model_dir(name, root)
    if _is_complete(folder):
        return FetchResult(name, folder, False)
    if is_offline():
        raise OfflineError(
            f"{name} is not in the model cache (looked in {folder}) and {OFFLINE_ENV} forbids "
            f"downloading it; fetch it where there is a network (python -m finetune fetch {name}) "
            f"or point {CACHE_ENV} at a cache that has it"
        )
    entry = manifest_entry(name)
    with _name_lock(root, name):
        if _is_complete(folder):  # another process finished it while we waited
            return FetchResult(name, folder, False)
        try:
            (root / MODELS_DIR).mkdir(parents=True, exist_ok=True)
            _remove_stale_builds(root / MODELS_DIR, name)
        except OSError as exc:
            raise _unwritable(root, exc) from None
        part = root / DOWNLOADS_DIR / f"{released_model(name).file}.part"
        url = download_url(name)
        size = download(url, part, expected_size=entry.get("size"), label=name, progress=progress)
        try:
            convert_release(name, part, folder, entry, source={"url": url, "size": size, "sha256": file_sha256(part)})
        except HubError:
            part.unlink(missing_ok=True)  # complete but wrong: the next fetch downloads afresh
            raise
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise HubError(
                    f"no space left on the device while converting {name} into {folder}; the download "
                    f"is kept in {part}, free some space and run again"
                ) from None
            raise hub_error_from(exc, folder) from None
        part.unlink(missing_ok=True)
    return FetchResult(name, folder, True)


def ensure_model(name: str, cache_dir: str | os.PathLike | None = None, progress: bool | None = None) -> Path:
    """The cached model folder of a released model name (fetched on first use)."""
    return fetch_model(name, cache_dir, progress).path


def remove_cached_model(name: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """Delete NAME's model folder and unfinished download; False when there was nothing to delete."""
    root = cache_root(cache_dir)
    folder = cached_model_dir(name, root)
    part = root / DOWNLOADS_DIR / f"{released_model(name).file}.part"
    if not folder.exists() and not part.exists():
        return False
    with _name_lock(root, name):
        try:
            if folder.exists():
                # renamed first, so the folder vanishes at once rather than file by file
                trash = folder.with_name(f".{name}.removing-{os.getpid()}")
                os.replace(folder, trash)
                shutil.rmtree(trash)
            part.unlink(missing_ok=True)
        except OSError as exc:
            raise _unwritable(root, exc) from None
    return True


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def cache_report(cache_dir: str | os.PathLike | None = None) -> list[tuple[str, str, int, Path]]:
    """(name, state 'ready' or 'partial download', bytes, path) for every model with something in the cache."""
    root = cache_root(cache_dir)
    rows = []
    for name, model in RELEASED_MODELS.items():
        folder = cached_model_dir(name, root)
        part = root / DOWNLOADS_DIR / f"{model.file}.part"
        if _is_complete(folder):
            rows.append((name, "ready", folder_bytes(folder), folder))
        if part.is_file():
            rows.append((name, "partial download", part.stat().st_size, part))
    return rows
