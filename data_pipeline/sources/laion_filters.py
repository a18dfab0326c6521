"""LAION metadata: column recognition and the row filters, applied batch by batch with pyarrow.

Every filter is vectorised over a record batch; a rejected row is counted under the first reason
(in ``REASONS`` order) that rejects it. Duplicate URLs and captions are found with 64-bit hashes
kept in sorted numpy blocks (8 bytes per kept row), so filtering a 13M-row file stays in bounded
memory.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from data_pipeline.errors import UserError

# Canonical field -> names used by the LAION releases (LAION-400M; LAION-2B and its aesthetics subsets).
KNOWN_COLUMNS: dict[str, tuple[str, ...]] = {
    "url": ("URL", "url"),
    "caption": ("TEXT", "caption", "text"),
    "width": ("WIDTH", "width"),
    "height": ("HEIGHT", "height"),
    "similarity": ("similarity", "SIMILARITY"),
    "license": ("LICENSE", "license"),
    "nsfw": ("NSFW", "nsfw"),
    "punsafe": ("punsafe", "PUNSAFE"),
    "pwatermark": ("pwatermark", "PWATERMARK"),
    "aesthetic": ("AESTHETIC_SCORE", "aesthetic", "aesthetic_score"),
    "sample_id": ("SAMPLE_ID", "sample_id", "key", "hash"),
}
REQUIRED = ("url", "caption")

# Rejection reasons, in the order they are decided.
REASONS = (
    "missing_url",
    "bad_scheme",
    "empty_caption",
    "caption_length",
    "keywords",
    "excluded_keywords",
    "caption_regex",
    "low_similarity",
    "nsfw",
    "unsafe",
    "watermark",
    "low_aesthetic",
    "too_small",
    "aspect_ratio",
    "not_sampled",
    "duplicate_url",
    "duplicate_caption",
    "over_max_samples",
)


class ColumnError(UserError, ValueError):
    pass


def resolve_columns(names: list[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Map canonical fields to the file's column names (exact name, then case-insensitive)."""
    overrides = overrides or {}
    unknown = set(overrides) - set(KNOWN_COLUMNS)
    if unknown:
        raise ColumnError(
            f"unknown field(s) in --column: {', '.join(sorted(unknown))}; fields are {', '.join(KNOWN_COLUMNS)}"
        )
    lower = {n.lower(): n for n in names}
    mapping: dict[str, str] = {}
    for fld, candidates in KNOWN_COLUMNS.items():
        if fld in overrides:
            if overrides[fld] not in names:
                raise ColumnError(f"--column {fld}={overrides[fld]}: no such column; the file has {', '.join(names)}")
            mapping[fld] = overrides[fld]
            continue
        found = next((c for c in candidates if c in names), None) or next(
            (lower[c.lower()] for c in candidates if c.lower() in lower), None
        )
        if found:
            mapping[fld] = found
    missing = [f for f in REQUIRED if f not in mapping]
    if missing:
        raise ColumnError(
            f"no {' or '.join(missing)} column; the file has {', '.join(names) or 'no columns'}. "
            f"Map them with e.g. --column {missing[0]}=NAME"
        )
    return mapping


def schema_kind(mapping: dict[str, str]) -> str:
    if "punsafe" in mapping or "aesthetic" in mapping:
        return "laion-2b/aesthetics"
    if "nsfw" in mapping or "sample_id" in mapping:
        return "laion-400m"
    return "custom"


@dataclass(frozen=True)
class FilterSettings:
    keywords: tuple[str, ...] = ()
    keyword_mode: str = "any"  # any | all
    exclude_keywords: tuple[str, ...] = ()
    caption_regex: str | None = None  # RE2 syntax, case-insensitive
    min_caption_chars: int = 1
    max_caption_chars: int | None = None
    min_similarity: float | None = None
    nsfw_allowed: tuple[str, ...] | None = None  # LAION-400M NSFW tags kept, e.g. ("UNLIKELY",)
    max_punsafe: float | None = None
    max_pwatermark: float | None = None
    min_aesthetic: float | None = None
    min_width: int | None = None
    min_height: int | None = None
    max_aspect_ratio: float | None = None
    dedupe_urls: bool = True
    dedupe_captions: bool = False
    sample_fraction: float | None = None
    max_samples: int | None = None
    seed: int | None = None  # with max_samples: a seeded uniform sample instead of the first N

    def __post_init__(self):
        if self.keyword_mode not in ("any", "all"):
            raise ValueError("keyword mode must be 'any' or 'all'")
        if self.sample_fraction is not None and not 0 < self.sample_fraction <= 1:
            raise ValueError("sample fraction must be in (0, 1]")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError("max samples must be at least 1")
        if self.max_aspect_ratio is not None and self.max_aspect_ratio < 1:
            raise ValueError("max aspect ratio is long side / short side, so at least 1")
        if self.caption_regex:
            try:
                pc.match_substring_regex(pa.array(["x"]), self.caption_regex, ignore_case=True)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"bad --caption-regex (RE2 syntax): {exc}") from None
        for words in (self.keywords, self.exclude_keywords):
            if any(not w.strip() for w in words):
                raise ValueError("keywords must not be empty")

    def needed_fields(self) -> set[str]:
        need = {"url", "caption"}
        for fld, active in (
            ("similarity", self.min_similarity is not None),
            ("nsfw", self.nsfw_allowed is not None),
            ("punsafe", self.max_punsafe is not None),
            ("pwatermark", self.max_pwatermark is not None),
            ("aesthetic", self.min_aesthetic is not None),
            ("width", self.min_width is not None or self.max_aspect_ratio is not None),
            ("height", self.min_height is not None or self.max_aspect_ratio is not None),
        ):
            if active:
                need.add(fld)
        return need

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


_FLAG_FOR = {
    "similarity": "--min-similarity",
    "nsfw": "--nsfw-allowed",
    "punsafe": "--max-punsafe",
    "pwatermark": "--max-pwatermark",
    "aesthetic": "--min-aesthetic",
    "width": "--min-width/--max-aspect-ratio",
    "height": "--min-height/--max-aspect-ratio",
}


def check_filter_columns(settings: FilterSettings, mapping: dict[str, str], path: str, names: list[str]) -> None:
    for fld in sorted(settings.needed_fields() - set(mapping)):
        raise ColumnError(
            f"{_FLAG_FOR.get(fld, fld)} needs a {fld} column, but {path} has only "
            f"{', '.join(names)}; map one with --column {fld}=NAME"
        )


_WORD_START = r"(?:^|[^\pL\pN_])"
_WORD_END = r"(?:$|[^\pL\pN_])"
_RE2_SPECIAL = re.compile(r"([\\.^$|?*+()\[\]{}])")


def whole_word_pattern(words: tuple[str, ...]) -> str:
    """RE2 pattern matching any of `words` as whole words (Unicode letters count as word chars)."""
    alts = [r"\s+".join(_RE2_SPECIAL.sub(r"\\\1", part) for part in w.split()) for w in words]
    return f"{_WORD_START}(?:{'|'.join(alts)}){_WORD_END}"


def normalise_captions(captions: pa.Array) -> pa.Array:
    """Lower case, punctuation dropped, whitespace collapsed: captions equal after this are duplicates."""
    text = pc.utf8_lower(captions)
    text = pc.replace_substring_regex(text, r"[^\pL\pN]+", " ")
    return pc.utf8_trim_whitespace(text)


def hash64(values: pa.Array, key: str = "dedupe") -> np.ndarray:
    """Stable 64-bit keyed hashes of strings (pandas' SipHash); nulls hash alike."""
    arr = values.to_numpy(zero_copy_only=False)
    hash_key = hashlib.sha256(key.encode()).hexdigest()[:16]  # SipHash wants exactly 16 bytes
    return pd.util.hash_array(arr.astype(object), categorize=False, hash_key=hash_key)


class HashSet64:
    """A set of uint64 held as a few sorted numpy blocks (merged like a binary counter)."""

    def __init__(self):
        self.blocks: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(b) for b in self.blocks)

    def contains(self, values: np.ndarray) -> np.ndarray:
        found = np.zeros(len(values), dtype=bool)
        for block in self.blocks:
            pos = np.searchsorted(block, values)
            pos[pos == len(block)] = 0
            found |= block[pos] == values
        return found

    def add_first_seen(self, values: np.ndarray) -> np.ndarray:
        """Mask of values neither seen before nor repeated earlier in `values`; adds them."""
        first = np.zeros(len(values), dtype=bool)
        if not len(values):
            return first
        _, idx = np.unique(values, return_index=True)
        first[idx] = True
        first &= ~self.contains(values)
        new = np.sort(values[first])
        if len(new):
            self.blocks.append(new)
            while len(self.blocks) > 1 and len(self.blocks[-1]) >= len(self.blocks[-2]) // 2:
                top = self.blocks.pop()
                self.blocks[-1] = np.sort(np.concatenate([self.blocks[-1], top]), kind="mergesort")
        return first


@dataclass
class FilterState:
    """What survives across batches: dedupe sets and counts."""

    urls: HashSet64 = field(default_factory=HashSet64)
    captions: HashSet64 = field(default_factory=HashSet64)
    rejected: Counter = field(default_factory=Counter)
    rows_read: int = 0
    rows_kept: int = 0


def _col(batch: pa.RecordBatch, mapping: dict[str, str], fld: str) -> pa.Array:
    return batch.column(batch.schema.get_field_index(mapping[fld]))


def numeric(arr: pa.Array) -> pa.Array:
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return pc.cast(arr, pa.float64())
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.float64())
    # Strings such as "0.31" in hand-made files; unparsable values become null (rejected).
    text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    ok = pc.match_substring_regex(text, r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
    return pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.float64())


def _fill(mask: pa.Array) -> np.ndarray:
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool)


def batch_checks(batch: pa.RecordBatch, mapping: dict[str, str], s: FilterSettings) -> list[tuple[str, np.ndarray]]:
    """(reason, passes) for each active row-local filter, in REASONS order."""
    checks: list[tuple[str, np.ndarray]] = []
    url = pc.utf8_trim_whitespace(pc.cast(_col(batch, mapping, "url"), pa.string()))
    checks.append(("missing_url", _fill(pc.greater(pc.utf8_length(url), 0))))
    checks.append(("bad_scheme", _fill(pc.match_substring_regex(url, r"^https?://[^/\s]", ignore_case=True))))
    caption = pc.cast(_col(batch, mapping, "caption"), pa.string())
    length = pc.utf8_length(pc.utf8_trim_whitespace(caption))
    checks.append(("empty_caption", _fill(pc.greater(length, 0))))
    ok_len = pc.greater_equal(length, s.min_caption_chars)
    if s.max_caption_chars is not None:
        ok_len = pc.and_(ok_len, pc.less_equal(length, s.max_caption_chars))
    checks.append(("caption_length", _fill(ok_len)))
    if s.keywords:
        if s.keyword_mode == "any":
            ok = _fill(pc.match_substring_regex(caption, whole_word_pattern(s.keywords), ignore_case=True))
        else:
            ok = np.ones(len(batch), dtype=bool)
            for word in s.keywords:
                ok &= _fill(pc.match_substring_regex(caption, whole_word_pattern((word,)), ignore_case=True))
        checks.append(("keywords", ok))
    if s.exclude_keywords:
        hit = _fill(pc.match_substring_regex(caption, whole_word_pattern(s.exclude_keywords), ignore_case=True))
        checks.append(("excluded_keywords", ~hit))
    if s.caption_regex:
        checks.append(("caption_regex", _fill(pc.match_substring_regex(caption, s.caption_regex, ignore_case=True))))
    if s.min_similarity is not None:
        checks.append(
            ("low_similarity", _fill(pc.greater_equal(numeric(_col(batch, mapping, "similarity")), s.min_similarity)))
        )
    if s.nsfw_allowed is not None:
        tags = pc.utf8_upper(pc.utf8_trim_whitespace(pc.cast(_col(batch, mapping, "nsfw"), pa.string())))
        allowed = pa.array([t.strip().upper() for t in s.nsfw_allowed], pa.string())
        checks.append(("nsfw", _fill(pc.is_in(tags, value_set=allowed))))
    if s.max_punsafe is not None:
        checks.append(("unsafe", _fill(pc.less_equal(numeric(_col(batch, mapping, "punsafe")), s.max_punsafe))))
    if s.max_pwatermark is not None:
        checks.append(
            ("watermark", _fill(pc.less_equal(numeric(_col(batch, mapping, "pwatermark")), s.max_pwatermark)))
        )
    if s.min_aesthetic is not None:
        checks.append(
            ("low_aesthetic", _fill(pc.greater_equal(numeric(_col(batch, mapping, "aesthetic")), s.min_aesthetic)))
        )
    width = numeric(_col(batch, mapping, "width")) if "width" in mapping else None
    height = numeric(_col(batch, mapping, "height")) if "height" in mapping else None
    if s.min_width is not None or s.min_height is not None:
        ok = np.ones(len(batch), dtype=bool)
        if s.min_width is not None:
            ok &= _fill(pc.greater_equal(width, s.min_width))
        if s.min_height is not None:
            ok &= _fill(pc.greater_equal(height, s.min_height))
        checks.append(("too_small", ok))
    if s.max_aspect_ratio is not None:
        long = pc.max_element_wise(width, height)
        short = pc.min_element_wise(width, height)
        ok = pc.and_(pc.greater(short, 0), pc.less_equal(long, pc.multiply(short, s.max_aspect_ratio)))
        checks.append(("aspect_ratio", _fill(ok)))
    if s.sample_fraction is not None and s.sample_fraction < 1:
        key = f"sample{s.seed or 0}"
        checks.append(("not_sampled", hash64(url, key) < np.uint64(int(s.sample_fraction * 2**64 - 1))))
    return checks


def filter_batch(batch: pa.RecordBatch, mapping: dict[str, str], s: FilterSettings, state: FilterState) -> np.ndarray:
    """Boolean mask of the rows of `batch` to keep; updates counts and dedupe sets."""
    alive = np.ones(len(batch), dtype=bool)
    for reason, passes in batch_checks(batch, mapping, s):
        dropped = alive & ~passes
        if dropped.any():
            state.rejected[reason] += int(dropped.sum())
            alive &= passes
    for reason, enabled, fld in (
        ("duplicate_url", s.dedupe_urls, "url"),
        ("duplicate_caption", s.dedupe_captions, "caption"),
    ):
        if not enabled or not alive.any():
            continue
        rows = np.flatnonzero(alive)
        values = pc.take(_col(batch, mapping, fld), pa.array(rows))
        values = pc.utf8_trim_whitespace(pc.cast(values, pa.string())) if fld == "url" else normalise_captions(values)
        target = state.urls if fld == "url" else state.captions
        first = target.add_first_seen(hash64(values))
        if (~first).any():
            state.rejected[reason] += int((~first).sum())
            alive[rows[~first]] = False
    state.rows_read += len(batch)
    state.rows_kept += int(alive.sum())
    return alive
