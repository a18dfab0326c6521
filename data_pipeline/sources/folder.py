"""`folder DIR`: a folder of images with captions in a CSV or a Hugging Face imagefolder metadata file.

Accepted caption files (first found, or --captions):
- `metadata.jsonl` / `metadata.csv` (imagefolder): `file_name` and `text` (or `caption`);
- any CSV with `file` (path relative to DIR) or `id` (file stem) and `caption` (or `text`).
Several rows for one file give it several captions. Other columns go into `attributes`, except
`license`, `attribution`/`author`, `url` and `similarity`, which fill those fields.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
from collections.abc import Iterator

from data_pipeline import cli
from data_pipeline.cli import exit_status_1
from data_pipeline.errors import UserError
from data_pipeline.shards import Failure, Sample, ShardTask, plan_shards

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
CAPTION_FILES = ("metadata.jsonl", "metadata.csv", "captions.csv")
FILE_COLUMNS = ("file_name", "file", "filename", "image", "path")
CAPTION_COLUMNS = ("text", "caption", "captions")
FIELD_COLUMNS = {"license": "license", "attribution": "attribution", "author": "attribution", "url": "url"}

MISSING_FILE = "missing_file"
UNSAFE_PATH = "unsafe_path"


class FolderError(UserError, ValueError):
    """The folder or its caption file cannot be used (message says why and where)."""


def find_caption_file(root: str) -> str:
    for name in CAPTION_FILES:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    csvs = sorted(f for f in os.listdir(root) if f.lower().endswith(".csv"))
    if len(csvs) == 1:
        return os.path.join(root, csvs[0])
    found = f" (found {', '.join(csvs)}; choose one with --captions)" if csvs else ""
    raise FolderError(f"{root}: no caption file: expected one of {', '.join(CAPTION_FILES)} or a single CSV{found}")


def _read_rows(path: str) -> Iterator[tuple[int, dict]]:
    if path.lower().endswith((".jsonl", ".json")):
        with open(path, encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise FolderError(f"{path}:{lineno}: not valid JSON ({exc})") from None
                if not isinstance(row, dict):
                    raise FolderError(f"{path}:{lineno}: expected a JSON object per line")
                yield lineno, row
    else:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, skipinitialspace=True)
            if not reader.fieldnames:
                raise FolderError(f"{path}: empty CSV")
            reader.fieldnames = [name.strip() for name in reader.fieldnames]
            for lineno, row in enumerate(reader, 2):
                yield lineno, row


def _index_stems(root: str) -> dict[str, str]:
    stems: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() in IMAGE_EXTENSIONS:
                stems.setdefault(stem, os.path.relpath(os.path.join(dirpath, name), root))
    return stems


def read_folder_items(root: str, captions_path: str | None = None) -> list[dict]:
    """One item per image: {"file": path relative to root, "captions": [...], "fields": {...}},
    in the caption file's order."""
    if not os.path.isdir(root):
        raise FolderError(f"{root}: not a directory")
    captions_path = captions_path or find_caption_file(root)
    items: dict[str, dict] = {}
    stems: dict[str, str] | None = None
    file_col = caption_col = None
    try:
        rows = list(_read_rows(captions_path))
    except UnicodeDecodeError as exc:
        raise FolderError(f"{captions_path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise FolderError(f"{captions_path}: malformed CSV ({exc})") from None
    for lineno, row in rows:
        if file_col is None:
            file_col = next((c for c in FILE_COLUMNS if c in row), "id" if "id" in row else None)
            caption_col = next((c for c in CAPTION_COLUMNS if c in row), None)
            if file_col is None or caption_col is None:
                raise FolderError(
                    f"{captions_path}: need a file column ({', '.join(FILE_COLUMNS)} or id) and a caption "
                    f"column ({', '.join(CAPTION_COLUMNS)}); found {', '.join(map(str, row))}"
                )
        name = str(row.get(file_col) or "").strip()
        if not name:
            raise FolderError(f"{captions_path}:{lineno}: empty {file_col}")
        if file_col == "id":
            if stems is None:
                stems = _index_stems(root)
            name = stems.get(name, name)
        caption = row.get(caption_col)
        captions = [str(c) for c in caption] if isinstance(caption, list) else [str(caption or "")]
        item = items.setdefault(name, {"file": name, "captions": [], "fields": {}})
        item["captions"].extend(captions)
        for col, value in row.items():
            if col not in (file_col, caption_col) and value not in (None, ""):
                item["fields"].setdefault(col, value)
    if not items:
        raise FolderError(f"{captions_path}: no rows")
    return list(items.values())


def resolve_inside(root: str, name: str) -> str | None:
    """The file's path if it stays inside root (no absolute paths, no '..' escapes)."""
    if os.path.isabs(name):
        return None
    root_real = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root_real, name))
    return path if os.path.commonpath([root_real, path]) == root_real else None


def produce_folder(task: ShardTask, root: str, source: str = "folder") -> Iterator[Sample | Failure]:
    for index, item in enumerate(task.items):
        path = resolve_inside(root, item["file"])
        if path is None:
            yield Failure(index, UNSAFE_PATH, f"{item['file']!r} points outside {root}")
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            yield Failure(index, MISSING_FILE, item["file"])
            continue
        except OSError as exc:
            yield Failure(index, MISSING_FILE, f"{item['file']}: {exc}")
            continue
        fields = dict(item["fields"])
        known = {target: fields.pop(col) for col, target in FIELD_COLUMNS.items() if col in fields}
        similarity = fields.pop("similarity", None)
        try:
            similarity = None if similarity is None else float(similarity)
        except (TypeError, ValueError):
            similarity = None
        yield Sample(
            index=index,
            image=data,
            caption=next((c for c in item["captions"] if c.strip()), ""),
            captions=item["captions"],
            source=source,
            url=known.get("url"),
            license=known.get("license"),
            attribution=known.get("attribution"),
            similarity=similarity,
            attributes=fields or None,
        )


def run(args: argparse.Namespace) -> int:
    with exit_status_1():
        items = read_folder_items(args.dir, args.captions)
    tasks = plan_shards(items, args.shard_size)
    produce = functools.partial(produce_folder, root=os.path.abspath(args.dir), source=args.source_name)
    source = {
        "type": "folder",
        "path": os.path.abspath(args.dir),
        "captions": os.path.abspath(args.captions or find_caption_file(args.dir)),
        "items": len(items),
    }
    return cli.run_build(args, tasks, produce, sources=[source])


DESCRIPTION = __doc__
FORMATTER = argparse.RawDescriptionHelpFormatter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli.add_writer_options(parser)
    parser.add_argument("dir", help="folder with the images")
    parser.add_argument(
        "--captions", help="caption file (default: metadata.jsonl, metadata.csv, captions.csv or the only CSV in DIR)"
    )
    parser.add_argument("--source-name", default="folder", help="value of the `source` field (default: folder)")
