"""A finished comic folder exported for readers: a multi-page PDF, a CBZ with ComicInfo.xml, a webtoon strip.

Everything is built from what the comic run wrote (comic.json and the page PNGs), so an export never re-samples
and can be rerun alone. Files are named after the comic's title made safe for any file system, written
atomically, and replaced on a rerun (they derive from the pages, which the run checked belong to this comic).

  TITLE.pdf            the pages in reading order, each page sized from its pixels at `dpi`
  TITLE.cbz            the page PNGs (001.png, 002.png, ... in reading order) and ComicInfo.xml (ComicInfo v2.0:
                       Title, Summary, Writer, PageCount, Manga=YesAndRightToLeft for right-to-left, Pages)
  TITLE-webtoon.png    every panel as lettered on its page, in reading order, at its page size (so lettering
                       keeps one scale), centred on a strip as wide as the widest panel and stacked with `gutter`
                       pixels of paper between (split into -webtoon-01.png, ... past WEBTOON_MAX_HEIGHT)
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from PIL import Image

from data_pipeline.errors import UserError
from data_pipeline.fsutil import atomic_write_bytes

from .lettering import PAPER

FORMATS = ("png", "pdf", "cbz", "webtoon")
DEFAULT_DPI = 150
DPI_RANGE = (36, 1200)
WEBTOON_MAX_HEIGHT = 30_000  # pixels per strip file; longer comics are split into numbered parts
_ILLEGAL_IN_FILE_NAMES = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_ILLEGAL_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_RESERVED_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


class ExportError(UserError, ValueError):
    """An export that cannot be made as asked (unknown format, bad DPI, a folder without a finished comic)."""


def parse_formats(text: str) -> tuple[str, ...]:
    """'png,pdf' -> ('png', 'pdf'); png (the pages themselves) is always included."""
    asked = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [part for part in asked if part not in FORMATS]
    if unknown or not asked:
        raise ExportError(f"--format {text!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    return tuple(f for f in FORMATS if f == "png" or f in asked)


def check_dpi(dpi: float) -> float:
    if not DPI_RANGE[0] <= dpi <= DPI_RANGE[1]:
        raise ExportError(f"--dpi must be between {DPI_RANGE[0]} and {DPI_RANGE[1]}, got {dpi:g}")
    return dpi


def safe_file_stem(title: str | None, fallback: str = "comic") -> str:
    """`title` as a file name any common file system accepts: illegal characters become '_', no trailing dots or
    spaces, no reserved device names, at most 120 UTF-8 bytes; `fallback` when nothing is left."""
    text = unicodedata.normalize("NFC", title or "")
    text = " ".join(_ILLEGAL_IN_FILE_NAMES.sub("_", text).split()).strip(" .")
    while len(text.encode("utf-8")) > 120:
        text = text[:-1].rstrip(" .")
    if not text.strip("_"):
        return fallback
    return f"_{text}" if text.split(".")[0].lower() in _RESERVED_NAMES else text


def xml_text(text: str) -> str:
    """Text XML 1.0 can carry (control characters it forbids are dropped; ElementTree escapes the rest)."""
    return _ILLEGAL_IN_XML.sub("", text)


def read_comic(out_dir: Path) -> dict:
    """The finished comic's metadata (comic.json), with its pages checked to exist."""
    path = out_dir / "comic.json"
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{out_dir} holds no comic (no comic.json); make the comic first") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is unreadable ({exc})") from None
    if not metadata.get("pages"):
        raise ExportError(f"{path} lists no finished pages; rerun the comic to finish it")
    for page in metadata["pages"]:
        if not (out_dir / page["file"]).is_file():
            raise ExportError(f"{out_dir / page['file']} is missing; rerun the comic to redraw it")
    return metadata


def export_comic(
    out_dir: str | Path, formats: tuple[str, ...], dpi: float = DEFAULT_DPI, gutter: int = 16
) -> list[Path]:
    """Write the asked formats beside the pages; returns the files written (png needs nothing: the pages are)."""
    out_dir = Path(out_dir)
    metadata = read_comic(out_dir)
    pages = [out_dir / page["file"] for page in metadata["pages"]]
    stem = safe_file_stem(metadata.get("title"))
    written = []
    if "pdf" in formats:
        written.append(write_pdf(pages, out_dir / f"{stem}.pdf", check_dpi(dpi)))
    if "cbz" in formats:
        written.append(write_cbz(pages, out_dir / f"{stem}.cbz", metadata))
    if "webtoon" in formats:
        written += write_webtoon(webtoon_panels(out_dir, metadata), out_dir / f"{stem}-webtoon.png", gutter)
    return written


def write_pdf(pages: list[Path], path: Path, dpi: float) -> Path:
    """One PDF page per image, `dpi` pixels to the inch (Pillow writes it)."""
    images = [_open_rgb(page) for page in pages]
    buffer = io.BytesIO()
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=float(dpi))
    atomic_write_bytes(path, buffer.getvalue())
    return path


def page_names(count: int) -> list[str]:
    """Zero-padded names that sort in reading order: 001.png, 002.png, ..."""
    width = max(3, len(str(count)))
    return [f"{i:0{width}d}.png" for i in range(1, count + 1)]


def write_cbz(pages: list[Path], path: Path, metadata: dict) -> Path:
    """A zip of the page PNGs in reading order (stored: PNG is compressed already) with ComicInfo.xml."""
    buffer = io.BytesIO()
    data = [page.read_bytes() for page in pages]
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ComicInfo.xml", comic_info_xml(metadata, pages, data), zipfile.ZIP_DEFLATED)
        for name, page_bytes in zip(page_names(len(pages)), data):
            archive.writestr(name, page_bytes, zipfile.ZIP_STORED)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def comic_info_xml(metadata: dict, pages: list[Path], data: list[bytes]) -> bytes:
    """ComicInfo.xml (v2.0 schema; its elements must come in the schema's order)."""
    root = ET.Element("ComicInfo")
    for tag, key in (("Title", "title"), ("Summary", "summary"), ("Writer", "writer")):
        if metadata.get(key):
            ET.SubElement(root, tag).text = xml_text(str(metadata[key]))
    ET.SubElement(root, "PageCount").text = str(len(pages))
    if metadata.get("reading_order") == "rtl":
        ET.SubElement(root, "Manga").text = "YesAndRightToLeft"
    listing = ET.SubElement(root, "Pages")
    for index, (page, page_bytes) in enumerate(zip(pages, data)):
        with Image.open(page) as im:
            width, height = im.size
        attributes = {"Image": str(index), "ImageSize": str(len(page_bytes))}
        attributes |= {"ImageWidth": str(width), "ImageHeight": str(height)}
        if index == 0:
            attributes["Type"] = "FrontCover"
        ET.SubElement(listing, "Page", attributes)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def webtoon_panels(out_dir: Path, metadata: dict) -> list[Image.Image]:
    """Every panel as it appears on its page (art and lettering, no border), in reading order."""
    files = {page["page"]: out_dir / page["file"] for page in metadata["pages"]}
    panels = []
    for page_number, file in files.items():
        entries = sorted((p for p in metadata.get("panels", []) if p["page"] == page_number), key=lambda p: p["panel"])
        if not entries:
            raise ExportError(f"{out_dir / 'comic.json'} lists no panels for page {page_number}")
        page = _open_rgb(file)
        panels += [page.crop(tuple(entry["box"])) for entry in entries]
    return panels


def webtoon_parts(heights: list[int], gutter: int, max_height: int = WEBTOON_MAX_HEIGHT) -> list[list[int]]:
    """Panel indices per strip file: consecutive panels while the strip stays within `max_height`."""
    parts, current, height = [], [], 0
    for index, panel_height in enumerate(heights):
        extra = panel_height + (gutter if current else 0)
        if current and height + extra > max_height:
            parts.append(current)
            current, extra, height = [], panel_height, 0
        current.append(index)
        height += extra
    return parts + [current] if current else parts


def write_webtoon(panels: list[Image.Image], path: Path, gutter: int) -> list[Path]:
    """Panels stacked top to bottom, each centred on a strip as wide as the widest, `gutter` pixels of paper between.
    Narrower panels are not enlarged: their lettering would grow with them."""
    width = max(panel.width for panel in panels)
    parts = webtoon_parts([p.height for p in panels], gutter)
    paths = (
        [path] if len(parts) == 1 else [path.with_name(f"{path.stem}-{i:02d}.png") for i in range(1, len(parts) + 1)]
    )
    for part, part_path in zip(parts, paths):
        strip = Image.new("RGB", (width, sum(panels[i].height for i in part) + gutter * (len(part) - 1)), PAPER)
        y = 0
        for i in part:
            strip.paste(panels[i], ((width - panels[i].width) // 2, y))
            y += panels[i].height + gutter
        buffer = io.BytesIO()
        strip.save(buffer, "PNG", optimize=True)
        atomic_write_bytes(part_path, buffer.getvalue())
    return paths


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")
