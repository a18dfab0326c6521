"""Reading shards back: the samples of a tar, member by member, with a cap on member size."""

from __future__ import annotations

import functools
import tarfile
import warnings
from collections.abc import Collection, Iterator

# Tar members above this are skipped when shards are read back. Shard members are resized images, captions and
# metadata (kilobytes to a few megabytes); the cap keeps a forged header from making a reader allocate gigabytes.
MAX_TAR_MEMBER_BYTES = 64 * 2**20


def iter_tar_samples(
    path: str,
    lazy: Collection[str] = (),
    max_member_bytes: int = MAX_TAR_MEMBER_BYTES,
    oversized: list[str] | None = None,
) -> Iterator[tuple[str, dict]]:
    """Yield (key, {extension: bytes}) for each sample of a shard, in file order.

    Members whose extension is in `lazy` are not read: their entry is a zero-argument function that reads them,
    valid until the iteration moves on (callers that need only some of the images skip reading the rest).
    Members larger than `max_member_bytes` are never read (a header can claim gigabytes, e.g. a sparse member, in
    a file of a few kilobytes): they are left out of their sample and their names appended to `oversized`.
    """
    with tarfile.open(path, "r") as tar:
        key, files = None, {}
        for member in tar:
            if not member.isfile():
                continue
            stem, _, ext = member.name.partition(".")
            if stem != key:
                if key is not None:
                    yield key, files
                key, files = stem, {}
            if member.size > max_member_bytes:
                if oversized is not None:
                    oversized.append(member.name)
            elif ext in lazy:
                files[ext] = functools.partial(_read_member, tar, member)
            else:
                files[ext] = _read_member(tar, member)
        if key is not None:
            yield key, files


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    return tar.extractfile(member).read()


def reread_samples(path: str) -> Iterator[tuple[str, dict]]:
    """`iter_tar_samples` for the writer's own rereads (merge, dedupe): oversized members are skipped with a
    warning naming the shard, so a forged member cannot exhaust memory and is not carried into the rewrite."""
    oversized: list[str] = []
    yield from iter_tar_samples(path, oversized=oversized)
    if oversized:
        warnings.warn(
            f"{path}: skipped {len(oversized)} tar member(s) larger than {MAX_TAR_MEMBER_BYTES} bytes "
            f"(first: {oversized[0]})",
            stacklevel=2,
        )
