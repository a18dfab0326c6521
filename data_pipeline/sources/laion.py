"""`laion PARQUET...`: filter LAION metadata, keep the chosen rows in a parquet file, download them.

Step 1 streams every input's row groups through the filters (``laion_filters``) and writes the
kept rows to ``DIR/laion_kept.parquet`` (one row group per shard; inspectable with pandas). A
rerun with the same inputs and filters reuses it. Step 2 downloads it shard by shard with
``data_pipeline.download`` (a rerun resumes). Inputs may be local paths, globs or http(s) URLs
(fetched once into ``DIR/_inputs/``).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_pipeline.cli import OptionError, add_writer_options, exit_status_1, writer_config_from_args
from data_pipeline.download.cli import add_download_options, options_from_args, run_download
from data_pipeline.download.client import ClientConfig, FetchError, HttpClient
from data_pipeline.download.items import ItemTableWriter, table_metadata
from data_pipeline.errors import UserError
from data_pipeline.fsutil import atomic_write
from data_pipeline.sources.laion_filters import (
    REASONS,
    ColumnError,
    FilterSettings,
    FilterState,
    check_filter_columns,
    filter_batch,
    hash64,
    numeric,
    resolve_columns,
    schema_kind,
)

KEPT_FILE = "laion_kept.parquet"
INPUTS_DIR = "_inputs"
BATCH_ROWS = 65_536
_FORMAT_VERSION = 1

# The kept-rows table: the item-table columns first, then LAION's own metadata.
KEPT_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("similarity", pa.float64()),
        ("license", pa.string()),
        ("sample_id", pa.string()),
        ("nsfw", pa.string()),
        ("punsafe", pa.float64()),
        ("pwatermark", pa.float64()),
        ("aesthetic", pa.float64()),
        ("declared_width", pa.int64()),
        ("declared_height", pa.int64()),
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
    ]
)
_FIELD_FOR = {
    "url": "url",
    "caption": "caption",
    "similarity": "similarity",
    "license": "license",
    "sample_id": "sample_id",
    "nsfw": "nsfw",
    "punsafe": "punsafe",
    "pwatermark": "pwatermark",
    "aesthetic": "aesthetic",
    "declared_width": "width",
    "declared_height": "height",
}


class InputError(UserError, ValueError):
    pass


# ---------------------------------------------------------------- inputs


def resolve_inputs(
    specs: list[str], out_dir: str, client_config: ClientConfig | None = None, progress: bool = True
) -> list[str]:
    """Expand globs, check local files, fetch http(s) URLs into DIR/_inputs/ (once)."""
    paths: list[str] = []
    for spec in specs:
        scheme = urlsplit(spec).scheme.lower()
        if scheme in ("http", "https"):
            paths.append(fetch_input(spec, out_dir, client_config, progress))
        elif re.match(r"^[a-z][a-z0-9+.-]*://", spec, re.I):
            raise InputError(f"{spec}: only local paths and http(s) URLs are read")
        elif glob.has_magic(spec):
            found = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
            if not found:
                raise InputError(f"{spec}: no file matches")
            paths.extend(found)
        elif os.path.isfile(spec):
            paths.append(spec)
        else:
            raise InputError(f"{spec}: no such file")
    return paths


def fetch_input(url: str, out_dir: str, client_config: ClientConfig | None, progress: bool) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", unquote(os.path.basename(urlsplit(url).path)) or "input.parquet")
    digest = f"{int(hash64(pa.array([url]))[0]):016x}"[:8]
    dest = os.path.join(out_dir, INPUTS_DIR, f"{digest}-{name}")
    if os.path.exists(dest):
        return dest
    if progress:
        print(f"fetching {url}", file=sys.stderr)

    def download(tmp: str) -> None:
        with HttpClient(client_config) as client, open(tmp, "wb") as fh:
            client.get(url, sink=fh, max_bytes=1 << 40, total_timeout=24 * 3600)

    try:
        atomic_write(dest, download)  # a failed or interrupted download leaves no partial file behind
    except FetchError as err:
        raise InputError(f"{url}: could not fetch ({err})") from None
    return dest


def _open_parquet(path: str) -> pq.ParquetFile:
    try:
        # A small read buffer instead of whole column chunks keeps memory flat on huge row groups.
        return pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path}: not a readable parquet file ({exc})") from None


# ---------------------------------------------------------------- filtering


@dataclass
class FilterReport:
    inputs: list[dict]
    rows_read: int
    rows_kept: int
    rejected: dict[str, int]

    def to_dict(self) -> dict:
        return {
            "inputs": self.inputs,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rejected": self.rejected,
        }


def _kept_batch(
    batch: pa.RecordBatch, mapping: dict[str, str], keep: np.ndarray, source: str, first_row: int
) -> pa.Table:
    rows = np.flatnonzero(keep)
    take = pa.array(rows)
    columns = []
    for fld in KEPT_SCHEMA:
        if fld.name == "source_file":
            columns.append(pa.array([source] * len(rows), pa.string()))
        elif fld.name == "source_row":
            columns.append(pa.array(rows + first_row, pa.int64()))
        elif _FIELD_FOR[fld.name] in mapping:
            col = batch.column(batch.schema.get_field_index(mapping[_FIELD_FOR[fld.name]])).take(take)
            columns.append(_cast(col, fld.type))
        else:
            columns.append(pa.nulls(len(rows), fld.type))
    return pa.Table.from_arrays(columns, schema=KEPT_SCHEMA)


def _cast(col: pa.Array, target: pa.DataType) -> pa.Array:
    if col.type == target:
        return col
    if pa.types.is_string(target):
        return col.cast(pa.string())
    return numeric(col).cast(target, safe=False)


def _iter_batches(paths: list[str], overrides: dict[str, str], settings: FilterSettings, bar: tqdm):
    """Yield (source name, first row index, mapping, batch) over every input."""
    for path in paths:
        pf = _open_parquet(path)
        names = pf.schema_arrow.names
        try:
            mapping = resolve_columns(names, overrides)
            check_filter_columns(settings, mapping, path, names)
        except ColumnError as exc:
            raise InputError(f"{path}: {exc}") from None
        first = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=sorted(set(mapping.values())), use_threads=False):
            yield path, first, mapping, batch
            first += batch.num_rows
            bar.update(batch.num_rows)


def filter_to_parquet(
    paths: list[str],
    kept_path: str,
    settings: FilterSettings,
    shard_size: int,
    column_overrides: dict[str, str] | None = None,
    progress: bool = True,
) -> FilterReport:
    """Stream the inputs through the filters into an item table at `kept_path` (atomic)."""
    overrides = column_overrides or {}
    inputs = []
    for path in paths:
        pf = _open_parquet(path)
        try:
            mapping = resolve_columns(pf.schema_arrow.names, overrides)
        except ColumnError as exc:
            raise InputError(f"{path}: {exc}") from None
        inputs.append({"path": path, "rows": pf.metadata.num_rows, "schema": schema_kind(mapping), "columns": mapping})
    total = sum(i["rows"] for i in inputs)
    selected = _seeded_selection(paths, overrides, settings, total, progress) if _two_pass(settings) else None

    metadata = {
        "source": "laion",
        "version": _FORMAT_VERSION,
        "shard_size": shard_size,
        "settings": laion_fingerprint(paths, settings, overrides),
    }
    writer = ItemTableWriter(kept_path, KEPT_SCHEMA, shard_size, metadata)
    state = FilterState()
    bar = tqdm(total=total, desc="filtering", unit="row", unit_scale=True, disable=not progress)
    try:
        offset = 0  # row position over all inputs, for the seeded selection
        for path, first, mapping, batch in _iter_batches(paths, overrides, settings, bar):
            keep = filter_batch(batch, mapping, settings, state)
            if selected is not None:
                positions = np.arange(offset, offset + batch.num_rows)
                chosen = np.isin(positions, selected, assume_unique=True)
                state.rejected["not_sampled"] += int((keep & ~chosen).sum())
                keep &= chosen
            elif settings.max_samples is not None:
                room = settings.max_samples - writer.rows
                over = np.flatnonzero(keep)[room:]
                if len(over):
                    keep[over] = False
                    state.rejected["over_max_samples"] += len(over)
            offset += batch.num_rows
            if keep.any():
                writer.write(_kept_batch(batch, mapping, keep, _source_name(path), first))
        writer._flush(final=True)
        order = {r: i for i, r in enumerate(REASONS)}
        rejected = dict(sorted(state.rejected.items(), key=lambda kv: order[kv[0]]))
        report = FilterReport(inputs=inputs, rows_read=state.rows_read, rows_kept=writer.rows, rejected=rejected)
        # The report lives in the table's footer, so a resumed run prints and records it unchanged.
        writer.close({"report": report.to_dict()})
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    return report


def _two_pass(settings: FilterSettings) -> bool:
    return settings.max_samples is not None and settings.seed is not None


def _seeded_selection(paths, overrides, settings: FilterSettings, total: int, progress: bool) -> np.ndarray:
    """Pass 1 of a seeded --max-samples: positions of a uniform random N of the rows that pass
    (the N smallest seeded URL hashes), in O(N) memory."""
    state = FilterState()
    n = settings.max_samples
    best_priority = np.empty(0, dtype=np.uint64)
    best_position = np.empty(0, dtype=np.int64)
    offset = 0
    bar = tqdm(total=total, desc="sampling", unit="row", unit_scale=True, disable=not progress)
    try:
        for _, _, mapping, batch in _iter_batches(paths, overrides, settings, bar):
            rows = np.flatnonzero(filter_batch(batch, mapping, settings, state))
            if len(rows):
                urls = batch.column(batch.schema.get_field_index(mapping["url"])).take(pa.array(rows))
                best_priority = np.concatenate(
                    [best_priority, hash64(urls.cast(pa.string()), key=f"pick{settings.seed}")]
                )
                best_position = np.concatenate([best_position, rows + offset])
                if len(best_priority) > n:
                    # lexsort: by priority, ties by position, so the choice is fully deterministic
                    order = np.lexsort((best_position, best_priority))[:n]
                    best_priority, best_position = best_priority[order], best_position[order]
            offset += batch.num_rows
    finally:
        bar.close()
    return np.sort(best_position)


def _source_name(path: str) -> str:
    base = os.path.basename(path)
    return re.sub(r"^[0-9a-f]{8}-", "", base) if os.sep + INPUTS_DIR + os.sep in path else base


def laion_fingerprint(paths: list[str], settings: FilterSettings, overrides: dict[str, str]) -> dict:
    """What decides the kept rows; a kept file with another fingerprint is not reused."""
    files = []
    for p in paths:
        st = os.stat(p)
        files.append({"name": os.path.basename(p), "bytes": st.st_size})
    return {"inputs": files, "filters": settings.to_dict(), "columns": dict(sorted(overrides.items()))}


# ---------------------------------------------------------------- the whole job


def prepare_kept_rows(
    specs: list[str],
    out_dir: str,
    settings: FilterSettings,
    shard_size: int,
    column_overrides: dict[str, str] | None = None,
    client_config: ClientConfig | None = None,
    progress: bool = True,
) -> tuple[str, dict]:
    """Resolve inputs and filter them into DIR/laion_kept.parquet, reusing a matching earlier one.

    Returns (path of the kept table, filter report as a dict).
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = resolve_inputs(specs, out_dir, client_config, progress)
    kept = os.path.join(out_dir, KEPT_FILE)
    fingerprint = laion_fingerprint(paths, settings, column_overrides or {})
    meta = table_metadata(kept) if os.path.exists(kept) else None
    if meta is not None:
        if meta.get("settings") == fingerprint and meta.get("shard_size") == shard_size and "report" in meta:
            return kept, meta["report"]
        raise InputError(
            f"{kept} was made from other inputs, filters or shard size; its shards would not match. "
            "Use a new --out folder (or delete that folder to start over)."
        )
    report = filter_to_parquet(paths, kept, settings, shard_size, column_overrides, progress).to_dict()
    return kept, report


# ---------------------------------------------------------------- command line


def _column_override(text: str) -> tuple[str, str]:
    field_name, sep, column = text.partition("=")
    if not sep or not field_name or not column:
        raise argparse.ArgumentTypeError("use FIELD=COLUMN, e.g. caption=alt_text")
    return field_name.strip(), column.strip()


def _words(values: list[str] | None) -> tuple[str, ...]:
    return tuple(w.strip() for v in values or [] for w in v.split(",") if w.strip())


DESCRIPTION = (
    "Filter LAION-400M / LAION-2B / aesthetics parquet files (streamed in row groups, bounded memory), keep the "
    "chosen rows in DIR/laion_kept.parquet, then download them into WebDataset shards. Rerunning the same command "
    "resumes."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_writer_options(p)
    add_download_options(p)
    p.add_argument("parquet", nargs="+", metavar="PARQUET", help="local paths, globs or http(s) URLs")
    p.add_argument(
        "--column",
        action="append",
        type=_column_override,
        default=[],
        metavar="FIELD=COLUMN",
        help="map a column name: fields url, caption, width, height, similarity, license, nsfw, "
        "punsafe, pwatermark, aesthetic, sample_id (repeatable)",
    )
    _add_filter_options(p.add_argument_group("filters"))
    p.add_argument("--filter-only", action="store_true", help="stop after writing DIR/laion_kept.parquet")


def _add_filter_options(f) -> None:
    f.add_argument(
        "--keywords",
        action="append",
        metavar="W1,W2",
        help="keep captions containing these whole words (case-insensitive; repeatable)",
    )
    f.add_argument(
        "--keyword-mode",
        choices=("any", "all"),
        default="any",
        help="any or all of the keywords must appear (default: any)",
    )
    f.add_argument(
        "--exclude-keywords", action="append", metavar="W1,W2", help="drop captions containing any of these whole words"
    )
    f.add_argument("--caption-regex", help="keep captions matching this RE2 regular expression (case-insensitive)")
    f.add_argument(
        "--min-caption-chars",
        type=int,
        default=1,
        help="shortest caption kept, in characters after trimming (default: 1)",
    )
    f.add_argument("--max-caption-chars", type=int, default=None, help="longest caption kept (default: no limit)")
    f.add_argument("--min-similarity", type=float, help="minimum CLIP image-text similarity")
    f.add_argument(
        "--nsfw-allowed", metavar="TAGS", help="LAION-400M NSFW tags to keep, comma-separated, e.g. UNLIKELY"
    )
    f.add_argument("--max-punsafe", type=float, help="LAION-2B: maximum probability of unsafe content")
    f.add_argument("--max-pwatermark", type=float, help="LAION-2B: maximum probability of a watermark")
    f.add_argument("--min-aesthetic", type=float, help="minimum aesthetic score")
    f.add_argument("--min-width", type=int, help="minimum declared width")
    f.add_argument("--min-height", type=int, help="minimum declared height")
    f.add_argument("--max-aspect-ratio", type=float, help="maximum long side / short side of the declared size")
    f.add_argument("--no-dedupe-urls", action="store_true", help="keep repeated URLs (deduplicated by default)")
    f.add_argument(
        "--dedupe-captions",
        action="store_true",
        help="drop rows whose caption equals an earlier one after lower-casing and removing punctuation",
    )
    f.add_argument("--sample-fraction", type=float, help="keep this random fraction of rows (seeded by --seed)")
    f.add_argument(
        "--max-samples",
        type=int,
        help="keep at most this many rows: the first ones, or a uniform random choice when --seed is given",
    )
    f.add_argument("--seed", type=int, help="seed for --sample-fraction and --max-samples")


def settings_from_args(args) -> FilterSettings:
    try:
        return FilterSettings(
            keywords=_words(args.keywords),
            keyword_mode=args.keyword_mode,
            exclude_keywords=_words(args.exclude_keywords),
            caption_regex=args.caption_regex,
            min_caption_chars=args.min_caption_chars,
            max_caption_chars=args.max_caption_chars,
            min_similarity=args.min_similarity,
            nsfw_allowed=_words([args.nsfw_allowed]) if args.nsfw_allowed else None,
            max_punsafe=args.max_punsafe,
            max_pwatermark=args.max_pwatermark,
            min_aesthetic=args.min_aesthetic,
            min_width=args.min_width,
            min_height=args.min_height,
            max_aspect_ratio=args.max_aspect_ratio,
            dedupe_urls=not args.no_dedupe_urls,
            dedupe_captions=args.dedupe_captions,
            sample_fraction=args.sample_fraction,
            max_samples=args.max_samples,
            seed=args.seed,
        )
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def run(args) -> int:
    with exit_status_1():
        writer = writer_config_from_args(args)
        settings = settings_from_args(args)
        options = options_from_args(args, source="laion")
    kept, report = prepare_kept_rows(
        args.parquet,
        writer.out_dir,
        settings,
        writer.shard_size,
        dict(args.column),
        options.client,
        progress=not args.no_progress,
    )
    rejected = ", ".join(f"{k}={v}" for k, v in report["rejected"].items()) or "none"
    print(f"{kept}: kept {report['rows_kept']} of {report['rows_read']} rows (rejected: {rejected})")
    if args.filter_only:
        return 0
    sources = [
        {
            "type": "laion",
            "inputs": [{k: i[k] for k in ("path", "rows", "schema")} for i in report["inputs"]],
            "rows_read": report["rows_read"],
            "rows_kept": report["rows_kept"],
            "kept_rows": KEPT_FILE,
        }
    ]
    filters = {**settings.to_dict(), "rejected": report["rejected"]}
    return run_download(args, kept, writer, options, sources, filters)
