"""`inspect DIR`: what a built dataset holds -- totals, splits, failure reasons, caption-length and
original-size histograms -- and a contact sheet PNG of random samples with their captions."""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import random
import tarfile
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data_pipeline.cli import exit_status_1
from data_pipeline.errors import UserError
from data_pipeline.fsutil import atomic_write
from data_pipeline.images import ImageError, decode_image
from data_pipeline.shards import MAX_TAR_MEMBER_BYTES, SPLITS, iter_tar_samples, normalize_size, size_dims

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

CAPTION_WORD_BINS = (0, 5, 10, 15, 20, 30, 50)
SIZE_BINS = (0, 64, 128, 256, 512, 1024, 2048)


def dataset_sizes(out_dir: str) -> list[int | str]:
    """The shard sets of a dataset, by folder name: squares (`32`) and WxH shapes (`64x32`), smallest area first."""
    sizes = []
    for name in os.listdir(out_dir):
        if not os.path.isdir(os.path.join(out_dir, name)):
            continue
        try:
            size = normalize_size(name)
        except ValueError:
            continue
        if str(size) == name:  # only the writer's own spelling names a shard set ("032" or "32x32" do not)
            sizes.append(size)
    return sorted(sizes, key=lambda size: (size_dims(size)[0] * size_dims(size)[1], size_dims(size)))


def _size_option(text: str) -> int | str:
    try:
        return normalize_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bin_label(bins: tuple[int, ...], i: int) -> str:
    return f"{bins[i]}-{bins[i + 1] - 1}" if i + 1 < len(bins) else f"{bins[i]}+"


def _histogram(values: list[int], bins: tuple[int, ...]) -> dict[str, int]:
    counts = Counter(int(np.searchsorted(bins, v, side="right")) - 1 for v in values)
    return {_bin_label(bins, i): counts.get(i, 0) for i in range(len(bins))}


class DatasetNotFound(UserError, FileNotFoundError):
    """`inspect` was pointed at something that holds no shards (of the size asked for)."""


class DamagedShard(UserError):
    """A shard `inspect` cannot read as a tar file."""


@dataclass
class _Scan:
    """What reading the samples of one size's shards found."""

    chosen: list[tuple[str, bytes | None, str]] = field(default_factory=list)  # reservoir: key, image, caption
    words: list[int] = field(default_factory=list)
    short_sides: list[int] = field(default_factory=list)
    splits: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    seen: int = 0
    bad_metadata: int = 0
    oversized: list[str] = field(default_factory=list)


def inspect_dataset(
    out_dir: str, size: int | str | None = None, samples: int = 16, seed: int = 0, sheet_path: str | None = None
) -> dict:
    """Scan the shards of one size and return a report; draw a contact sheet when sheet_path is set."""
    if not os.path.isdir(out_dir):
        raise DatasetNotFound(f"{out_dir}: not a directory")
    sizes = dataset_sizes(out_dir)
    if not sizes:
        raise DatasetNotFound(f"{out_dir}: no shard folders (DIR/<size>/NNNNN.tar)")
    size = normalize_size(size) if size is not None else sizes[-1]
    if size not in sizes:
        raise DatasetNotFound(f"{out_dir}: no shards of size {size} (have {', '.join(map(str, sizes))})")
    tars = sorted(glob.glob(os.path.join(out_dir, str(size), "[0-9]*.tar")))
    try:
        scan = _scan_samples(tars, samples, random.Random(seed))
    except tarfile.TarError as exc:
        raise DamagedShard(str(exc)) from None
    report = _report(out_dir, sizes, size, len(tars), scan)
    if sheet_path and scan.chosen:
        scan.chosen.sort(key=lambda c: c[0])
        write_contact_sheet(scan.chosen, sheet_path)
        report["contact_sheet"] = os.path.abspath(sheet_path)
    return report


def _scan_samples(tars: list[str], samples: int, rng: random.Random) -> _Scan:
    """Read every sample's metadata, and the images of a uniform random choice of `samples` of them."""
    scan = _Scan()

    def want_image() -> bool:  # reservoir sampling: read an image only when it would be kept
        return len(scan.chosen) < samples or rng.random() < samples / (scan.seen + 1)

    for path in tars:
        for key, raw_meta, image in _scan_tar(path, want_image, scan.oversized):
            meta = _sample_metadata(raw_meta)
            if meta is None:
                scan.bad_metadata += 1
                continue
            scan.words.append(len(meta.caption.split()))
            if meta.short_side is not None:
                scan.short_sides.append(meta.short_side)
            scan.splits[meta.split] += 1
            scan.sources[meta.source] += 1
            if image is not None:
                if len(scan.chosen) < samples:
                    scan.chosen.append((key, image, meta.caption))
                else:
                    scan.chosen[rng.randrange(samples)] = (key, image, meta.caption)
            scan.seen += 1
    return scan


def _report(out_dir: str, sizes: list[int | str], size: int | str, shards: int, scan: _Scan) -> dict:
    stats = _shard_stats(out_dir, size)
    failures: Counter = Counter()
    for st in stats:
        failures.update(st.get("failures", {}))
    manifest_path = os.path.join(out_dir, "manifest.json")
    return {
        "dir": os.path.abspath(out_dir),
        "sizes": sizes,
        "inspected_size": size,
        "shards": shards,
        "complete_shards": len(stats),
        "samples": scan.seen,
        "bad_metadata": scan.bad_metadata,  # samples whose JSON is unreadable or has wrongly typed fields (skipped)
        "oversized_members": len(scan.oversized),  # tar members above the size cap (never read)
        "items": sum(st.get("count", 0) for st in stats),
        "failed": sum(failures.values()),
        "failures": dict(failures.most_common()),
        "splits": {s: scan.splits.get(s, 0) for s in SPLITS},
        "sources": dict(scan.sources.most_common()),
        "caption_words": _histogram(scan.words, CAPTION_WORD_BINS),
        "caption_words_mean": round(float(np.mean(scan.words)), 2) if scan.words else 0.0,
        "original_short_side": _histogram(scan.short_sides, SIZE_BINS),
        "manifest": os.path.exists(manifest_path),
        "contact_sheet": None,
    }


def _scan_tar(path: str, want_image, oversized: list[str]):
    """Yield (key, raw metadata JSON or None, image bytes or None), reading image bytes only when want_image()
    says so; members above the shards' size cap are skipped and named in `oversized`."""
    for key, files in iter_tar_samples(path, lazy=IMAGE_EXTENSIONS, oversized=oversized):
        read_image = next((files[ext] for ext in IMAGE_EXTENSIONS if ext in files), None)
        yield key, files.get("json"), read_image() if read_image is not None and want_image() else None


class _SampleMetadata(NamedTuple):
    caption: str
    short_side: int | None  # of the original image; None when the sample does not say
    split: str
    source: str


def _sample_metadata(raw: bytes | None) -> _SampleMetadata | None:
    """What the report reads from a sample's JSON, or None when the JSON is unreadable or a field has the wrong
    type (a width of "NaN", a list for a caption, ...)."""
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    caption, split, source = meta.get("caption") or "", meta.get("split") or "train", meta.get("source") or "?"
    if not all(isinstance(v, str) for v in (caption, split, source)):
        return None
    width, height = meta.get("width"), meta.get("height")
    if width is None and height is None:
        return _SampleMetadata(caption, None, split, source)
    if not (_is_size(width) and _is_size(height)):
        return None
    return _SampleMetadata(caption, int(min(width, height)), split, source)


def _is_size(value) -> bool:
    """A positive, finite number of pixels (JSON may carry NaN, Infinity, strings or booleans instead)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _shard_stats(out_dir: str, size: int | str) -> list[dict]:
    stats = []
    for path in sorted(glob.glob(os.path.join(out_dir, str(size), "[0-9]*_stats.json"))):
        try:
            with open(path, encoding="utf-8") as fh:
                stats.append(json.load(fh))
        except (OSError, ValueError):
            continue
    return stats


def write_contact_sheet(samples: list[tuple[str, bytes, str]], path: str, tile: int = 192) -> None:
    """A grid of images, each with its key and wrapped caption underneath; written atomically."""
    cols = math.ceil(math.sqrt(len(samples)))
    rows = math.ceil(len(samples) / cols)
    font = _font(12)
    line_h = 15
    text_lines = 6
    cell_w, cell_h = tile + 8, tile + 8 + line_h * text_lines
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    chars = max(10, tile // 7)
    for i, (key, data, caption) in enumerate(samples):
        x, y = (i % cols) * cell_w + 4, (i // cols) * cell_h + 4
        try:
            rgb, _ = decode_image(data)
            img = Image.fromarray(rgb)
            scale = tile / max(img.size)
            resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST  # keep small pixels crisp
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)
            sheet.paste(img, (x + (tile - img.width) // 2, y + (tile - img.height) // 2))
        except ImageError as exc:
            draw.text((x + 4, y + tile // 2), f"unreadable: {exc.reason}", fill=(200, 0, 0), font=font)
        lines = [key] + textwrap.wrap(caption, chars)
        if len(lines) > text_lines:
            lines = lines[: text_lines - 1] + [lines[text_lines - 1][: chars - 1] + "…"]
        for j, line in enumerate(lines):
            draw.text((x, y + tile + 2 + j * line_h), line, fill=(90, 90, 90) if j == 0 else (0, 0, 0), font=font)
    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def format_report(report: dict) -> str:
    lines = [
        f"dataset {report['dir']}",
        f"  sizes {', '.join(map(str, report['sizes']))}; inspected {report['inspected_size']} px, "
        f"{report['shards']} shards ({report['complete_shards']} complete)",
        f"  samples {report['samples']} of {report['items']} input items, {report['failed']} failed",
    ]
    if report["bad_metadata"]:
        lines.append(f"  skipped {report['bad_metadata']} samples with unreadable or mistyped metadata JSON")
    if report["oversized_members"]:
        lines.append(f"  skipped {report['oversized_members']} tar members larger than {MAX_TAR_MEMBER_BYTES} bytes")
    lines += [
        "  splits " + ", ".join(f"{k}={v}" for k, v in report["splits"].items()),
        "  sources " + ", ".join(f"{k}={v}" for k, v in report["sources"].items()),
    ]
    if report["failures"]:
        lines.append("  failures by reason:")
        lines += [f"    {reason:<24} {count}" for reason, count in report["failures"].items()]
    for title, key in (
        ("caption length (words)", "caption_words"),
        ("original short side (px)", "original_short_side"),
    ):
        hist = report[key]
        peak = max(hist.values()) or 1
        lines.append(f"  {title}:")
        lines += [f"    {label:>10} {count:>7} {'#' * round(30 * count / peak)}" for label, count in hist.items()]
    lines.append(f"  mean caption length {report['caption_words_mean']} words")
    if report["contact_sheet"]:
        lines.append(f"  contact sheet: {report['contact_sheet']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    sheet = None if args.samples <= 0 else (args.sheet or os.path.join(args.dir, "contact_sheet.png"))
    with exit_status_1():
        report = inspect_dataset(args.dir, size=args.size, samples=args.samples, seed=args.seed, sheet_path=sheet)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="dataset directory (the --out of a build)")
    parser.add_argument("--size", type=_size_option, help="which shard set to read: N or WxH (default: the largest)")
    parser.add_argument(
        "--samples", type=int, default=16, help="random samples on the contact sheet; 0: no sheet (default: 16)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for choosing the samples (default: 0)")
    parser.add_argument("--sheet", help="contact sheet PNG path (default: DIR/contact_sheet.png)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
