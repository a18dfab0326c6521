"""`wikipedia TITLE...`: captioned images of wiki articles via the MediaWiki API, into shards.

1. ``action=parse`` gives each article's HTML; BeautifulSoup finds the captioned images:
   figures in the current markup (``<figure typeof="mw:File/...">`` + ``<figcaption>``), the
   legacy thumbnails (``div.thumbinner`` + ``div.thumbcaption``), galleries and infobox images.
   Icons and tiny images are skipped; captions are cleaned of markup, citation marks and entities.
2. ``action=query&prop=imageinfo`` gives each file's thumbnail URL at the chosen width, and its
   license and author (``extmetadata``).
3. The images are listed in ``DIR/wikipedia_items.parquet`` and downloaded shard by shard with
   ``data_pipeline.download`` (per-host limits keep the image host unhammered; reruns resume).

The endpoint is a flag, so any MediaWiki works. A missing article is reported, not fatal.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urljoin, urlsplit

import pyarrow as pa
from bs4 import BeautifulSoup, Tag
from tqdm import tqdm

from data_pipeline.cli import add_writer_options, exit_status_1, writer_config_from_args
from data_pipeline.download.cli import add_download_options, options_from_args, run_download
from data_pipeline.download.client import FetchError, HttpClient
from data_pipeline.download.items import ItemTableWriter, table_metadata
from data_pipeline.errors import UserError

DEFAULT_ENDPOINT = "https://en.wikipedia.org/w/api.php"
ITEMS_FILE = "wikipedia_items.parquet"
IMAGEINFO_BATCH = 50  # the API's limit of titles per query
_FORMAT_VERSION = 1

ITEM_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("captions", pa.list_(pa.string())),
        ("license", pa.string()),
        ("attribution", pa.string()),
        ("group", pa.string()),
        ("file_title", pa.string()),
        ("page_title", pa.string()),
        ("kind", pa.string()),
        ("description_url", pa.string()),
        ("license_url", pa.string()),
        ("declared_width", pa.int64()),
        ("declared_height", pa.int64()),
    ]
)

# Containers whose images are decoration or navigation, never content.
_SKIP_ANCESTORS = (
    "noviewer",
    "navbox",
    "metadata",
    "ambox",
    "mbox-image",
    "sistersitebox",
    "vertical-navbox",
    "mw-editsection",
    "portalbox",
    "noprint",
)
_CITATION_MARK = re.compile(
    r"\[\s*(?:\d+|[a-z]|[ivxlc]+|(?:note|nb|n)\s*\d+|citation needed|clarification needed|"
    r"dubious[^\]]*|when\?|who\?|which\?|according to whom\?|failed verification|better source needed)\s*\]",
    re.I,
)


# ---------------------------------------------------------------- HTML -> captioned images


@dataclass
class FoundImage:
    kind: str  # figure, thumb, gallery, infobox
    src: str  # as in the page (may be protocol-relative)
    caption: str
    file_title: str | None  # "File:Name.jpg", when the page links the file page
    display_width: int | None
    display_height: int | None
    file_width: int | None
    file_height: int | None
    alt: str = ""


def clean_caption_html(element: Tag | None) -> str:
    """Readable plain text of a caption element: no markup, citation marks or entities."""
    if element is None:
        return ""
    element = BeautifulSoup(str(element), "html.parser")  # work on a copy
    for junk in element.select(
        "sup.reference, .reference, .mw-ref, .noprint, style, script, .magnify, "
        ".mw-cite-backlink, .mw-editsection, .sortkey, .Inline-Template"
    ):
        junk.decompose()
    text = html.unescape(element.get_text(" "))  # get_text decoded entities; this catches double-escaped ones
    return _tidy(_CITATION_MARK.sub("", text))


def _tidy(text: str) -> str:
    text = " ".join(text.split())
    text = re.sub(r"\s+([,.;:!?%)\]])", r"\1", text)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    return text.strip()


def _int_attr(tag: Tag, name: str) -> int | None:
    value = tag.get(name)
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


_UPLOAD_PATH = re.compile(r"/(?:thumb/)?[0-9a-f]/[0-9a-f]{2}/([^/]+?)(?:/[^/]+)?$")
_FILE_LINK = re.compile(r"(?:/wiki/|[?&]title=|^\./)((?:File|Image):[^?#&]+)")


def _file_title(img: Tag) -> str | None:
    """The image's "File:..." title: from its upload path (any language), else from its file link."""
    match = _UPLOAD_PATH.search(urlsplit(str(img.get("src") or "")).path)
    if match:
        return "File:" + unquote(match.group(1)).replace("_", " ")
    anchor = img.find_parent("a")
    for href in (anchor.get("href") if anchor else None, img.get("resource")):
        match = _FILE_LINK.search(str(href or ""))
        if match:
            return unquote(match.group(1)).replace("_", " ")
    return None


def _skipped_container(img: Tag) -> bool:
    for parent in img.parents:
        classes = parent.get("class") or []
        if any(c in _SKIP_ANCESTORS for c in classes):
            return True
    return False


def _found(kind: str, img: Tag, caption: str) -> FoundImage:
    return FoundImage(
        kind=kind,
        src=str(img.get("src") or ""),
        caption=caption,
        file_title=_file_title(img),
        display_width=_int_attr(img, "width"),
        display_height=_int_attr(img, "height"),
        file_width=_int_attr(img, "data-file-width"),
        file_height=_int_attr(img, "data-file-height"),
        alt=_tidy(str(img.get("alt") or "")),
    )


def extract_images(page_html: str, page_title: str = "") -> list[FoundImage]:
    """Every captioned content image of an article's HTML, in page order, duplicates included."""
    soup = BeautifulSoup(page_html, "html.parser")
    found: list[tuple[int, FoundImage]] = []
    seen: set[int] = set()

    def add(kind: str, img: Tag | None, caption: str) -> None:
        if img is None or id(img) in seen or _skipped_container(img):
            return
        seen.add(id(img))
        found.append((position[id(img)], _found(kind, img, caption)))

    position = {id(img): i for i, img in enumerate(soup.find_all("img"))}
    for li in soup.select("li.gallerybox"):
        add("gallery", li.find("img"), clean_caption_html(li.select_one(".gallerytext")))
    for fig in soup.find_all("figure"):
        if str(fig.get("typeof") or "").startswith("mw:File"):
            add("figure", fig.find("img"), clean_caption_html(fig.find("figcaption")))
    for box in soup.select("div.thumbinner"):
        add("thumb", box.find("img"), clean_caption_html(box.select_one(".thumbcaption")))
    for table in soup.select("table.infobox"):
        for img in table.find_all("img"):
            cell = img.find_parent(["td", "th"]) or table
            caption_el = cell.select_one(".infobox-caption")
            if caption_el is None:
                row = img.find_parent("tr")
                following = row.find_next_sibling("tr") if row is not None else None
                if following is not None:
                    caption_el = following.select_one(".infobox-caption")
            add("infobox", img, clean_caption_html(caption_el))
    images = [img for _, img in sorted(found, key=lambda pair: pair[0])]
    for img in images:
        if not img.caption and img.kind == "infobox":
            # An uncaptioned infobox image normally shows the article's subject.
            img.caption = img.alt or page_title
    return images


def usable(img: FoundImage, min_display: int, min_original: int) -> bool:
    """False for icons, tiny images and images without a caption."""
    if not img.src or not img.caption:
        return False
    if img.display_width is not None and img.display_height is not None:
        if min(img.display_width, img.display_height) < min_display:
            return False
    if img.file_width is not None and img.file_height is not None:
        if min(img.file_width, img.file_height) < min_original:
            return False
    return True


def thumbnail_url(src: str, page_url: str, width: int, file_width: int | None) -> str:
    """Absolute URL of `src` at `width` px: protocol-relative and relative forms resolved; a
    MediaWiki thumbnail path re-targeted to the width, or the original when it is not wider."""
    url = urljoin(page_url, src)
    parts = urlsplit(url)
    match = re.match(r"^(.*)/thumb(/.+?/[^/]+)/(?:[^/]*?)(\d+)px-([^/]+)$", parts.path)
    if not match:
        return url
    prefix, original, _, _ = match.groups()
    vector = original.lower().endswith((".svg", ".pdf", ".djvu", ".tif", ".tiff"))  # only thumbnails decode
    if file_width is not None and width >= file_width and not vector:
        return parts._replace(path=prefix + original).geturl()
    new_path = re.sub(r"/(?:[^/]*?)(\d+)px-([^/]+)$", lambda m: f"/{width}px-{m.group(2)}", parts.path)
    return parts._replace(path=new_path).geturl()


# ---------------------------------------------------------------- the API


class WikiError(UserError, RuntimeError):
    """The wiki or the titles cannot be used: the API fails or answers no JSON, no titles were given, ..."""


@dataclass
class WikiApi:
    """The few MediaWiki API calls we need, through the polite client (User-Agent, rate, retries)."""

    endpoint: str
    client: HttpClient
    maxlag_retries: int = 3

    def call(self, **params) -> dict:
        params = {"format": "json", "formatversion": "2", "maxlag": "5", **params}
        for attempt in range(self.maxlag_retries + 1):
            try:
                result = self.client.get(self.endpoint, params=params)
            except FetchError as err:
                raise WikiError(f"API request failed: {err}") from None
            try:
                data = _json(result.content)
            except ValueError:
                raise WikiError(f"{self.endpoint} did not answer JSON; is it a MediaWiki api.php URL?") from None
            error = data.get("error") if isinstance(data, dict) else None
            if error and error.get("code") == "maxlag" and attempt < self.maxlag_retries:
                # The wiki asks bots to wait while its replicas catch up.
                time.sleep(float(result.headers.get("retry-after", "5") or 5))
                continue
            return data
        raise WikiError("the wiki stayed lagged (maxlag); try again later")

    def parse(self, title: str) -> tuple[str | None, str, str | None]:
        """(html or None, resolved title, error message when the page is missing)."""
        data = self.call(action="parse", page=title, prop="text", redirects="1", disableeditsection="1", disabletoc="1")
        if "error" in data:
            err = data["error"]
            return None, title, f"{err.get('code', 'error')}: {err.get('info', '')}".strip()
        parsed = data.get("parse") or {}
        text = parsed.get("text")
        if isinstance(text, dict):  # formatversion=1 answers
            text = text.get("*")
        if not isinstance(text, str):
            return None, title, "no page text in the API answer"
        return text, parsed.get("title") or title, None

    def image_info(self, file_titles: list[str], width: int) -> dict[str, dict]:
        """File title -> {url, width, height, description_url, license, license_url, attribution, ...}."""
        out: dict[str, dict] = {}
        for start in range(0, len(file_titles), IMAGEINFO_BATCH):
            batch = file_titles[start : start + IMAGEINFO_BATCH]
            data = self.call(
                action="query",
                prop="imageinfo",
                titles="|".join(batch),
                iiprop="url|size|mime|extmetadata",
                iiurlwidth=str(width),
                iiextmetadatafilter="LicenseShortName|License|LicenseUrl|Artist|Credit|AttributionRequired|UsageTerms",
            )
            query = data.get("query") or {}
            aliases = {n["to"]: n["from"] for n in query.get("normalized", [])}
            pages = query.get("pages") or []
            if isinstance(pages, dict):  # formatversion=1 answers
                pages = list(pages.values())
            for page in pages:
                infos = page.get("imageinfo") or []
                if not infos:
                    continue
                info = _info_fields(infos[0], self.endpoint)
                out[page["title"]] = info
                if page["title"] in aliases:
                    out[aliases[page["title"]]] = info
        return out


def _json(content: bytes):
    return json.loads(content.decode("utf-8"))


def _meta_text(meta: dict, key: str) -> str | None:
    value = (meta.get(key) or {}).get("value")
    if value is None:
        return None
    # extmetadata values are HTML written by uploaders: keep only their text.
    value = str(value)
    if "<" in value:
        value = BeautifulSoup(value, "html.parser").get_text(" ")
    text = _tidy(html.unescape(value))
    return text or None


def _info_fields(info: dict, endpoint: str) -> dict:
    meta = info.get("extmetadata") or {}
    artist = _meta_text(meta, "Artist")
    credit = _meta_text(meta, "Credit")
    description_url = info.get("descriptionurl")
    author = artist or credit
    attribution = None
    if author or description_url:
        attribution = ", ".join(p for p in (author, f"via {description_url}" if description_url else None) if p)
    return {
        "url": urljoin(endpoint, info.get("thumburl") or info.get("url") or ""),
        "width": info.get("width"),
        "height": info.get("height"),
        "description_url": description_url,
        "license": _meta_text(meta, "LicenseShortName") or _meta_text(meta, "License"),
        "license_url": _meta_text(meta, "LicenseUrl"),
        "attribution": attribution,
    }


# ---------------------------------------------------------------- titles -> item table


@dataclass
class CollectReport:
    pages: list[dict] = field(default_factory=list)  # title, resolved, images
    missing: list[dict] = field(default_factory=list)  # title, error
    images_found: int = 0
    images_skipped: int = 0
    images_kept: int = 0

    def to_dict(self) -> dict:
        return {
            "pages": self.pages,
            "missing": self.missing,
            "images_found": self.images_found,
            "images_skipped": self.images_skipped,
            "images_kept": self.images_kept,
        }


def collect_items(
    titles: list[str],
    api: WikiApi,
    items_path: str,
    shard_size: int,
    thumb_width: int = 512,
    min_display: int = 40,
    min_original: int = 100,
    progress: bool = True,
    fingerprint: dict | None = None,
) -> CollectReport:
    """Find the captioned images of `titles` and write them as an item table (one row per file)."""
    report = CollectReport()
    rows: dict[str, dict] = {}  # key: file title (or URL) -> row; repeated images gather captions
    for title in tqdm(titles, desc="articles", unit="page", disable=not progress):
        page_html, resolved, error = api.parse(title)
        if page_html is None:
            report.missing.append({"title": title, "error": error})
            print(f"warning: {title!r}: {error}", file=sys.stderr)
            continue
        found = extract_images(page_html, resolved)
        keep = [img for img in found if usable(img, min_display, min_original)]
        report.images_found += len(found)
        report.images_skipped += len(found) - len(keep)
        report.pages.append({"title": title, "resolved": resolved, "images": len(keep)})
        for img in keep:
            _add_image_row(rows, img, api.endpoint, resolved, thumb_width)
    _add_file_info(rows, api, thumb_width)
    report.images_kept = len(rows)
    _write_item_table(items_path, rows, shard_size, fingerprint, report)
    return report


def _add_image_row(rows: dict[str, dict], img: FoundImage, page_url: str, page_title: str, thumb_width: int) -> None:
    """A row for an image not seen yet; a caption more for one already seen on this or another page."""
    key = img.file_title or thumbnail_url(img.src, page_url, thumb_width, img.file_width)
    row = rows.get(key)
    if row is not None:
        if img.caption not in row["captions"]:
            row["captions"].append(img.caption)
        return
    rows[key] = {
        "url": thumbnail_url(img.src, page_url, thumb_width, img.file_width),
        "caption": img.caption,
        "captions": [img.caption],
        "license": None,
        "attribution": None,
        "group": key,
        "file_title": img.file_title,
        "page_title": page_title,
        "kind": img.kind,
        "description_url": None,
        "license_url": None,
        "declared_width": img.file_width,
        "declared_height": img.file_height,
    }


def _add_file_info(rows: dict[str, dict], api: WikiApi, thumb_width: int) -> None:
    """Fill in thumbnail URL, size, license and attribution of the rows that name a wiki file."""
    files = [k for k, r in rows.items() if r["file_title"]]
    if not files:
        return
    infos = api.image_info(files, thumb_width)
    for key in files:
        info = infos.get(key)
        if not info:
            continue
        row = rows[key]
        if info["url"]:
            row["url"] = info["url"]
        row.update(
            license=info["license"],
            attribution=info["attribution"],
            description_url=info["description_url"],
            license_url=info["license_url"],
            declared_width=info["width"] or row["declared_width"],
            declared_height=info["height"] or row["declared_height"],
        )


def _write_item_table(
    items_path: str, rows: dict[str, dict], shard_size: int, fingerprint: dict | None, report: CollectReport
) -> None:
    writer = ItemTableWriter(
        items_path,
        ITEM_SCHEMA,
        shard_size,
        {"source": "wikipedia", "version": _FORMAT_VERSION, "shard_size": shard_size, "settings": fingerprint or {}},
    )
    try:
        if rows:
            writer.write(pa.Table.from_pylist(list(rows.values()), schema=ITEM_SCHEMA))
        writer.close({"report": report.to_dict()})
    except BaseException:
        writer.abort()
        raise


def read_titles(titles: list[str], titles_file: str | None) -> list[str]:
    out = [t.strip() for t in titles if t.strip()]
    if titles_file:
        try:
            with open(titles_file, encoding="utf-8") as fh:
                out += [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]
        except (OSError, ValueError) as exc:  # missing, unreadable or not UTF-8: a user error (status 2)
            raise WikiError(str(exc)) from None
    unique = list(dict.fromkeys(out))
    if not unique:
        raise WikiError("no article titles given (arguments or --titles-file)")
    return unique


def prepare_items(
    titles: list[str],
    out_dir: str,
    api: WikiApi,
    shard_size: int,
    thumb_width: int,
    min_display: int,
    min_original: int,
    progress: bool = True,
) -> tuple[str, dict]:
    """Write DIR/wikipedia_items.parquet, or reuse the one an identical earlier run wrote."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, ITEMS_FILE)
    fingerprint = {
        "titles": titles,
        "endpoint": api.endpoint,
        "thumb_width": thumb_width,
        "min_display": min_display,
        "min_original": min_original,
    }
    meta = table_metadata(path) if os.path.exists(path) else None
    if meta is not None:
        if meta.get("settings") == fingerprint and meta.get("shard_size") == shard_size and "report" in meta:
            return path, meta["report"]
        raise WikiError(f"{path} was made from other titles or settings; use a new --out folder")
    report = collect_items(titles, api, path, shard_size, thumb_width, min_display, min_original, progress, fingerprint)
    return path, report.to_dict()


# ---------------------------------------------------------------- command line


DESCRIPTION = (
    "Collect the captioned images (figures, thumbnails, galleries, infoboxes) of wiki articles through the "
    "MediaWiki API, with their license and author, then download them into WebDataset shards. Rerunning the same "
    "command resumes."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_writer_options(p)
    add_download_options(p, {"per_domain_concurrency": 4, "per_domain_rate": 10.0, "threads": 8})
    p.add_argument("titles", nargs="*", metavar="TITLE", help="article titles")
    p.add_argument("--titles-file", help="a file with one title per line ('#' starts a comment)")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"MediaWiki api.php URL (default: {DEFAULT_ENDPOINT})")
    p.add_argument(
        "--thumb-width",
        type=int,
        default=512,
        help="width of the thumbnails requested from the wiki; never wider than the original (default: 512)",
    )
    p.add_argument(
        "--min-display-size",
        type=int,
        default=40,
        help="skip images shown smaller than this many pixels on the page: icons (default: 40)",
    )
    p.add_argument(
        "--min-original-size",
        type=int,
        default=100,
        help="skip files whose original short side is smaller (default: 100)",
    )
    p.add_argument("--api-rate", type=float, default=2.0, help="API requests per second (default: 2)")
    p.add_argument("--contact", help="contact (e-mail or URL) added to the User-Agent, as Wikimedia asks of bots")


def run(args) -> int:
    titles = read_titles(args.titles, args.titles_file)
    if urlsplit(args.endpoint).scheme not in ("http", "https"):
        raise WikiError("--endpoint must be an http(s) URL")
    with exit_status_1():
        writer = writer_config_from_args(args)
        options = options_from_args(args, source="wikipedia")
    user_agent = options.client.user_agent + (f" contact: {args.contact}" if args.contact else "")
    image_client = dataclasses.replace(options.client, user_agent=user_agent)
    options = dataclasses.replace(options, client=image_client)
    api_config = dataclasses.replace(image_client, per_domain_rate=args.api_rate, per_domain_concurrency=1)
    with HttpClient(api_config) as client:
        api = WikiApi(args.endpoint, client)
        try:
            items, report = prepare_items(
                titles,
                writer.out_dir,
                api,
                writer.shard_size,
                args.thumb_width,
                args.min_display_size,
                args.min_original_size,
                progress=not args.no_progress,
            )
        except ValueError as exc:  # a damaged item table in --out: said in one line, status 2 as for WikiError
            raise WikiError(str(exc)) from None
    missing = ", ".join(m["title"] for m in report["missing"])
    print(
        f"{items}: {report['images_kept']} images from {len(report['pages'])} pages "
        f"({report['images_skipped']} icons/uncaptioned skipped)" + (f"; missing pages: {missing}" if missing else "")
    )
    sources = [
        {
            "type": "wikipedia",
            "endpoint": args.endpoint,
            "pages": len(report["pages"]),
            "missing": report["missing"],
            "items": ITEMS_FILE,
        }
    ]
    status = run_download(
        args,
        items,
        writer,
        options,
        sources,
        {
            "thumb_width": args.thumb_width,
            "min_display_size": args.min_display_size,
            "min_original_size": args.min_original_size,
        },
    )
    return status
