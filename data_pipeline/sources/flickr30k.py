"""`flickr30k ROOT`: Flickr30k images with all five captions per image.

Caption layouts:
- the original `results_20130124.token`: `1000092795.jpg#0<TAB>Two young guys ...`;
- Kaggle's `results.csv`: a header `image_name| comment_number| comment`, then
  `1000092795.jpg| 0| Two young guys ...` (one known row lacks the second separator:
  `2199200615.jpg| 4   A dog ...`; it is repaired);
- `captions.txt` (CSV `image,caption`), as in other Kaggle copies.
Images are looked for in ROOT/flickr30k-images, ROOT/flickr30k_images (also nested twice, as
Kaggle ships it), ROOT/Images or ROOT itself, unless --images is given.
"""

from __future__ import annotations

import argparse
import csv
import functools
import os
import re
from collections.abc import Iterator

from data_pipeline import cli
from data_pipeline.cli import exit_status_1
from data_pipeline.errors import UserError
from data_pipeline.shards import Failure, Sample, ShardTask, plan_shards
from data_pipeline.sources.folder import MISSING_FILE, UNSAFE_PATH, resolve_inside

CAPTION_FILES = ("results_20130124.token", "results.csv", "captions.txt")
IMAGE_DIRS = ("flickr30k-images", "flickr30k_images/flickr30k_images", "flickr30k_images", "Images", "images")
SOURCE_URL = "https://shannon.cs.illinois.edu/DenotationGraph/"


class Flickr30kError(UserError, ValueError):
    pass


def find_layout(root: str, captions: str | None = None, images: str | None = None) -> tuple[str, str]:
    if captions is None:
        captions = next((os.path.join(root, n) for n in CAPTION_FILES if os.path.isfile(os.path.join(root, n))), None)
        if captions is None:
            raise Flickr30kError(f"{root}: no caption file ({', '.join(CAPTION_FILES)}); pass --captions")
    if images is None:
        images = next((os.path.join(root, d) for d in IMAGE_DIRS if os.path.isdir(os.path.join(root, d))), root)
    if not os.path.isfile(captions):
        raise Flickr30kError(f"{captions}: caption file not found")
    if not os.path.isdir(images):
        raise Flickr30kError(f"{images}: images folder not found")
    return captions, images


_TOKEN_LINE = re.compile(r"^(?P<image>[^#\t]+)#(?P<number>\d+)\t(?P<caption>.*)$")
_BROKEN_CSV_FIELD = re.compile(r"^\s*(?P<number>\d+)\s+(?P<caption>.+)$")


def parse_captions(path: str) -> dict[str, list[str]]:
    """Image file name -> captions ordered by their number, in the file's image order."""
    try:
        return _parse_captions(path)
    except UnicodeDecodeError as exc:
        raise Flickr30kError(f"{path}: not UTF-8 text ({exc})") from None
    except (csv.Error, KeyError) as exc:
        raise Flickr30kError(f"{path}: malformed caption file ({type(exc).__name__}: {exc})") from None


def _parse_captions(path: str) -> dict[str, list[str]]:
    numbered: dict[str, dict[int, str]] = {}
    with open(path, encoding="utf-8-sig", newline="") as fh:
        head = fh.readline()
        fh.seek(0)
        if "|" in head and "image_name" in head:
            rows = _kaggle_rows(fh, path)
        elif "\t" in head and "#" in head.split("\t", 1)[0]:
            rows = _token_rows(fh, path)
        elif head.strip().lower().startswith("image,"):
            rows = _captions_txt_rows(fh)
        else:
            raise Flickr30kError(f"{path}: unrecognised caption layout (first line {head.strip()[:80]!r})")
        for image, number, caption in rows:
            per_image = numbered.setdefault(image.strip(), {})
            number = number if number is not None else len(per_image)
            per_image[number] = caption.strip()
    if not numbered:
        raise Flickr30kError(f"{path}: no captions")
    return {image: [c for _, c in sorted(caps.items())] for image, caps in numbered.items()}


def _token_rows(fh, path):
    for lineno, line in enumerate(fh, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        match = _TOKEN_LINE.match(line)
        if not match:
            raise Flickr30kError(f"{path}:{lineno}: expected 'IMAGE.jpg#N<TAB>caption', got {line[:80]!r}")
        yield match["image"], int(match["number"]), match["caption"]


def _kaggle_rows(fh, path):
    next(fh)  # header
    for lineno, line in enumerate(fh, 2):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("|", 2)
        if len(parts) == 3:
            image, number, caption = parts
        elif len(parts) == 2 and (match := _BROKEN_CSV_FIELD.match(parts[1])):
            image, number, caption = parts[0], match["number"], match["caption"]
        else:
            raise Flickr30kError(f"{path}:{lineno}: expected 'image| number| comment', got {line[:80]!r}")
        try:
            number = int(number.strip())
        except ValueError:
            raise Flickr30kError(f"{path}:{lineno}: comment_number {number.strip()!r} is not a number") from None
        yield image, number, caption


def _captions_txt_rows(fh):
    for row in csv.DictReader(fh):
        yield row["image"], None, row.get("caption") or ""


def produce_flickr30k(task: ShardTask, images_dir: str) -> Iterator[Sample | Failure]:
    for index, (image, captions) in enumerate(task.items):
        path = resolve_inside(images_dir, image)
        if path is None:
            yield Failure(index, UNSAFE_PATH, image)
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            yield Failure(index, MISSING_FILE, f"{image}: {exc.strerror or exc}")
            continue
        yield Sample(
            index=index,
            image=data,
            caption=next((c for c in captions if c.strip()), ""),
            captions=captions,
            source="flickr30k",
            url=None,
            attributes={"flickr_id": os.path.splitext(image)[0]},
            group=image,
        )


def run(args: argparse.Namespace) -> int:
    with exit_status_1():
        captions_path, images_dir = find_layout(args.root, args.captions, args.images)
        by_image = parse_captions(captions_path)
    items = list(by_image.items())
    if args.limit:
        items = items[: args.limit]
    tasks = plan_shards(items, args.shard_size)
    produce = functools.partial(produce_flickr30k, images_dir=os.path.abspath(images_dir))
    source = {
        "type": "flickr30k",
        "captions": os.path.abspath(captions_path),
        "images": os.path.abspath(images_dir),
        "items": len(items),
        "homepage": SOURCE_URL,
    }
    return cli.run_build(args, tasks, produce, sources=[source], filters={"limit": args.limit} if args.limit else None)


DESCRIPTION = __doc__
FORMATTER = argparse.RawDescriptionHelpFormatter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli.add_writer_options(parser)
    parser.add_argument("root", help="Flickr30k folder (caption file and images folder inside)")
    parser.add_argument("--captions", help="caption file (default: found in ROOT)")
    parser.add_argument("--images", help="images folder (default: found in ROOT)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (default: all)")
