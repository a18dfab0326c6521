"""The item table: one parquet row per image to fetch, written by a web source before downloading.

Standard columns: ``url``, ``caption`` and optional ``captions`` (list), ``license``,
``attribution``, ``similarity``, ``group`` (split group). Any other column is source metadata
(e.g. LAION's ``punsafe``) and ends up in the sample's ``attributes``. Row ``i`` belongs to shard
``i // shard_size``; the table is written with one row group per shard so a shard task reads
only its own rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from data_pipeline.fsutil import fsync_dir
from data_pipeline.shards import ShardTask

STANDARD_COLUMNS = ("url", "caption", "captions", "license", "attribution", "similarity", "group")
_METADATA_KEY = b"autocomics"


class ItemTableWriter:
    """Append record batches, then ``close()`` renames the finished file into place.

    Not `fsutil.atomic_write`: the file is streamed over many `write()` calls (a LAION filter pass over terabytes
    of parquet), so the writer keeps its own temporary file, synced to disk and renamed the same way."""

    def __init__(self, path: str, schema: pa.Schema, row_group_size: int, metadata: dict):
        for name in ("url", "caption"):
            if name not in schema.names:
                raise ValueError(f"an item table needs a {name!r} column")
        self.path = os.fspath(path)
        self.row_group_size = row_group_size
        self.schema = schema
        self.metadata = dict(metadata)
        self.tmp = f"{self.path}.tmp-{os.getpid()}"
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        table = table.select(self.schema.names).cast(self.schema)
        for b in table.to_batches():
            self._pending.append(b)
            self._pending_rows += b.num_rows
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        # Row groups are exactly row_group_size rows so that row group i is shard i.
        while self._pending_rows >= self.row_group_size or (final and self._pending_rows):
            table = pa.Table.from_batches(self._pending, schema=self.schema)
            take = min(self.row_group_size, table.num_rows)
            self._writer.write_table(table.slice(0, take), row_group_size=take)
            rest = table.slice(take)
            self._pending = rest.to_batches()
            self._pending_rows = rest.num_rows
            self.rows += take

    def close(self, extra_metadata: dict | None = None) -> None:
        """Finish the file; the metadata (plus ``extra_metadata``) goes into its footer."""
        self._flush(final=True)
        self._writer.add_key_value_metadata(
            {_METADATA_KEY.decode(): json.dumps({**self.metadata, **(extra_metadata or {})}, sort_keys=True)}
        )
        self._writer.close()
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def abort(self) -> None:
        self._writer.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def table_metadata(path: str) -> dict | None:
    """The settings an item table was written with, or None when unreadable/foreign."""
    try:
        meta = pq.ParquetFile(path).metadata.metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(_METADATA_KEY)
    return json.loads(raw) if raw else None


def count_rows(path: str) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def read_rows(path: str, start: int, stop: int) -> list[dict]:
    """Rows [start, stop) as dicts, reading only the row groups that hold them."""
    pf = pq.ParquetFile(path)
    out: list[dict] = []
    offset = 0
    for rg in range(pf.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if offset + n > start and offset < stop:
            table = pf.read_row_group(rg)
            lo, hi = max(start - offset, 0), min(stop - offset, n)
            out.extend(table.slice(lo, hi - lo).to_pylist())
        offset += n
        if offset >= stop:
            break
    return out


@dataclass(frozen=True)
class ItemRange(Sequence):
    """A shard's slice of an item table; cheap to pickle, rows are read by whoever runs the shard."""

    path: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.load()[i]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return read_rows(self.path, self.start + i, self.start + i + 1)[0]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.load())

    def load(self) -> list[dict]:
        return read_rows(self.path, self.start, self.stop)


def plan_item_shards(path: str, shard_size: int) -> list[ShardTask]:
    total = count_rows(path)
    return [
        ShardTask(sid, ItemRange(os.fspath(path), sid * shard_size, min(total, (sid + 1) * shard_size)))
        for sid in range((total + shard_size - 1) // shard_size)
    ]
