"""The catalogue: saved images with captions, prompts and generation parameters, and comics saved as one item.

A comic item is one ``items`` row (kind ``comic``; its caption is the comic's title, its ``image_hash`` the cover,
i.e. page 1) plus its pages in reading order in ``item_pages``. Saving, listing, searching, renaming, deleting and
exporting treat it as one item; an export is a CBZ of its pages (with ComicInfo.xml) or a PDF.
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from ...comic.export import DEFAULT_DPI, write_cbz, write_pdf
from ...comic.export import FORMATS as COMIC_FORMATS
from ...comic.script import LIMITS, READING_ORDERS
from ...outputs import slugify
from .backends import PostgresBackend, SQLiteBackend, open_backend
from .errors import ImageMissing, InvalidInput, ItemNotFound
from .images import ImageStore, png_to_store

MAX_CAPTION_CHARS = 500
MAX_PROMPT_CHARS = 4000
MAX_PARAMS_CHARS = 64_000
SORTS = ("date", "caption")
DATABASE_NAME = "catalogue.sqlite"  # the studio's layout of a catalogue folder (see Catalogue.in_folder)
IMAGES_DIR_NAME = "images"

IMAGE, COMIC = "image", "comic"  # the kinds of item
MAX_COMIC_PAGES = LIMITS.pages  # a comic item holds as many pages as a comic script may have
COMIC_EXPORTS = ("cbz", "pdf")  # what a comic item downloads as; cbz first, the default

_COLUMNS = "id, image_hash, caption, prompt, params, created_at, embedding_model, kind, reading_order, exports"


@dataclass(frozen=True)
class Item:
    id: int
    image_hash: str
    caption: str
    prompt: str
    params: dict
    created_at: datetime
    embedding_model: str | None = None
    score: float | None = field(default=None, compare=False)
    kind: str = IMAGE
    reading_order: str = "ltr"  # comics: ltr or rtl
    exports: tuple[str, ...] = ()  # comics: the formats it was exported in when generated (pdf, cbz, webtoon)
    pages: tuple[str, ...] = ()  # comics: the image hash of each page, in reading order; empty for an image

    @property
    def is_comic(self) -> bool:
        return self.kind == COMIC

    @property
    def page_count(self) -> int:
        return len(self.pages) if self.is_comic else 1


def clean_caption(text: str, limit: int = MAX_CAPTION_CHARS, what: str = "caption") -> str:
    """Normalise untrusted caption text; refuse empty or over-long captions with a clear message."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be text")
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        raise InvalidInput(f"{what} is empty")
    if len(text) > limit:
        raise InvalidInput(f"{what} is {len(text)} characters long; the limit is {limit}")
    return text


class Catalogue:
    """Rows in a database (SQLite file or PostgreSQL) plus image files under content-hash names.

    ``embedder`` (see :mod:`sampling.studio.search`) turns captions into unit vectors for search
    by meaning; without one, search falls back to substring matching.
    """

    def __init__(self, database: str | Path, image_dir: str | Path, embedder=None, migrate: bool = True):
        self.backend: SQLiteBackend | PostgresBackend = open_backend(database)
        self.images = ImageStore(image_dir)
        self.embedder = embedder
        if migrate:
            self.backend.migrate()

    @classmethod
    def in_folder(cls, folder: str | Path, dsn: str | None = None, embedder=None) -> "Catalogue":
        """The studio's layout: ``folder/catalogue.sqlite`` (unless a DSN is given) and ``folder/images/``."""
        folder = Path(folder)
        return cls(dsn or folder / DATABASE_NAME, folder / IMAGES_DIR_NAME, embedder=embedder)

    def describe(self) -> str:
        return self.backend.describe()

    # --- writing -------------------------------------------------------------------------

    def add(self, image, caption: str, prompt: str = "", params: dict | None = None) -> Item:
        caption = clean_caption(caption)
        prompt = clean_caption(prompt, MAX_PROMPT_CHARS, "prompt") if prompt and prompt.strip() else ""
        params_text = _params_text(params)
        data = png_to_store(image, params)
        embedding = self._embed_one(caption)
        with self.images.lock():
            image_hash = self.images.put(data)
            try:
                with self.backend.transaction(write=True) as cur:
                    row = self._insert_item(cur, image_hash, caption, prompt, params_text, embedding)
            except BaseException:
                self._drop_file_if_unreferenced(image_hash)
                raise
        return self._item(row)

    def add_comic(
        self,
        pages: list,
        title: str,
        reading_order: str = "ltr",
        exports: tuple[str, ...] | list[str] = (),
        prompt: str = "",
        params: dict | None = None,
    ) -> Item:
        """Save page images (PIL images, PNG/JPEG paths or bytes, in reading order) as one comic item titled
        ``title``; ``exports`` names the formats the comic was exported in (recorded, not stored)."""
        title = clean_caption(title, what="comic title")
        prompt = clean_caption(prompt, MAX_PROMPT_CHARS, "prompt") if prompt and prompt.strip() else ""
        params_text = _params_text(params)
        reading_order, exports = _comic_options(pages, reading_order, exports)
        embedding = self._embed_one(title)
        hashes: list[str] = []
        with self.images.lock():
            try:
                for page in pages:  # one page in memory at a time
                    hashes.append(self.images.put(png_to_store(page)))
                with self.backend.transaction(write=True) as cur:
                    comic = {"kind": COMIC, "reading_order": reading_order, "exports": ",".join(exports)}
                    row = self._insert_item(cur, hashes[0], title, prompt, params_text, embedding, comic)
                    for number, image_hash in enumerate(hashes, 1):
                        cur.execute(
                            "INSERT INTO item_pages (item_id, page_number, image_hash) VALUES (?, ?, ?)",
                            (row["id"], number, image_hash),
                        )
            except BaseException:
                for image_hash in set(hashes):
                    self._drop_file_if_unreferenced(image_hash)
                raise
        return self._item(row, pages=tuple(hashes))

    def _insert_item(self, cur, image_hash, caption, prompt, params_text, embedding, extra: dict | None = None) -> dict:
        """Insert one items row (``extra``: further columns, e.g. a comic's) and return it."""
        values = {
            "image_hash": image_hash,
            "caption": caption,
            "prompt": prompt,
            "params": self.backend.params_to_db(params_text),
            "created_at": self.backend.now(),
            "embedding": None if embedding is None else self.backend.blob(embedding.tobytes()),
            "embedding_model": None if embedding is None else self.embedder.name,
            **(extra or {}),
        }
        sql = f"INSERT INTO items ({', '.join(values)}) VALUES ({', '.join('?' * len(values))}) RETURNING {_COLUMNS}"
        return cur.execute(sql, tuple(values.values()))[0]

    def rename(self, item_id: int, caption: str) -> Item:
        caption = clean_caption(caption)
        embedding = self._embed_one(caption)
        with self.backend.transaction(write=True) as cur:
            rows = cur.execute(
                f"UPDATE items SET caption = ?, embedding = ?, embedding_model = ? WHERE id = ? RETURNING {_COLUMNS}",
                (
                    caption,
                    None if embedding is None else self.backend.blob(embedding.tobytes()),
                    None if embedding is None else self.embedder.name,
                    int(item_id),
                ),
            )
            if not rows:
                raise ItemNotFound(f"catalogue item {item_id} does not exist (deleted?)")
            return self._items(cur, rows)[0]

    def delete(self, item_id: int) -> Item:
        """Remove a row (and a comic's pages); each image file goes too once no other row uses the same image."""
        with self.images.lock():
            with self.backend.transaction(write=True) as cur:
                pages = self._pages(cur, [int(item_id)]).get(int(item_id), ())
                cur.execute("DELETE FROM item_pages WHERE item_id = ?", (int(item_id),))
                rows = cur.execute(f"DELETE FROM items WHERE id = ? RETURNING {_COLUMNS}", (int(item_id),))
            if not rows:
                raise ItemNotFound(f"catalogue item {item_id} does not exist (already deleted?)")
            item = self._item(rows[0], pages=pages)
            for image_hash in {item.image_hash, *item.pages}:
                self._drop_file_if_unreferenced(image_hash)
        return item

    def _drop_file_if_unreferenced(self, image_hash: str) -> None:
        with self.backend.transaction() as cur:
            left = cur.execute(
                "SELECT (SELECT COUNT(*) FROM items WHERE image_hash = ?) "
                "+ (SELECT COUNT(*) FROM item_pages WHERE image_hash = ?) AS n",
                (image_hash, image_hash),
            )[0]["n"]
        if left == 0:
            self.images.remove(image_hash)

    # --- reading -------------------------------------------------------------------------

    def get(self, item_id: int) -> Item:
        with self.backend.transaction() as cur:
            rows = cur.execute(f"SELECT {_COLUMNS} FROM items WHERE id = ?", (int(item_id),))
            if not rows:
                raise ItemNotFound(f"catalogue item {item_id} does not exist (deleted?)")
            return self._items(cur, rows)[0]

    def list(
        self, sort: str = "date", descending: bool | None = None, limit: int | None = None, offset: int = 0
    ) -> list[Item]:
        """Items newest first (``sort="date"``) or A→Z by caption, case-insensitively (``sort="caption"``)."""
        if sort not in SORTS:
            raise InvalidInput(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        if descending is None:
            descending = sort == "date"
        direction = "DESC" if descending else "ASC"
        key = "created_at" if sort == "date" else self.backend.caption_order_sql()
        sql = f"SELECT {_COLUMNS} FROM items ORDER BY {key} {direction}, id {direction}"
        args: tuple = ()
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args = (int(limit), int(offset))
        with self.backend.transaction() as cur:
            return self._items(cur, cur.execute(sql, args))

    def count(self) -> int:
        with self.backend.transaction() as cur:
            return cur.execute("SELECT COUNT(*) AS n FROM items")[0]["n"]

    def image_path(self, item: Item | int) -> Path:
        """Path of the item's image on disk; :class:`ImageMissing` when the file is gone."""
        item = item if isinstance(item, Item) else self.get(item)
        path = self.images.path(item.image_hash)
        if not path.is_file():
            raise ImageMissing(f"the image of catalogue item {item.id} ({item.caption!r}) is missing on disk: {path}")
        return path

    def page_paths(self, item: Item | int) -> list[Path]:
        """The files of a comic's pages in reading order (an image item: its one image); :class:`ImageMissing`,
        naming every missing page, when any is gone."""
        item = item if isinstance(item, Item) else self.get(item)
        if not item.is_comic:
            return [self.image_path(item)]
        paths = [self.images.path(image_hash) for image_hash in item.pages]
        missing = [number for number, path in enumerate(paths, 1) if not path.is_file()]
        if missing:
            raise ImageMissing(
                f"comic item {item.id} ({item.caption!r}) is missing {len(missing)} of its {len(paths)} page files "
                f"on disk: page(s) {', '.join(map(str, missing))} under {self.images.root}"
            )
        return paths

    def export(self, item: Item | int, dest_dir: str | Path, comic_format: str = COMIC_EXPORTS[0]) -> Path:
        """Copy the image to ``dest_dir`` under a readable name (for downloads); a comic is written as one file of
        its pages in reading order: a CBZ with ComicInfo.xml (``comic_format="cbz"``) or a PDF."""
        item = item if isinstance(item, Item) else self.get(item)
        if item.is_comic:
            return self._export_comic(item, Path(dest_dir), comic_format)
        source = self.image_path(item)
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / f"{slugify(item.caption, max_length=60, empty='image')}-{item.id}.png"
        tmp = target.with_suffix(".png.tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
        return target

    def _export_comic(self, item: Item, dest_dir: Path, comic_format: str) -> Path:
        if comic_format not in COMIC_EXPORTS:
            raise InvalidInput(f"a comic downloads as {' or '.join(COMIC_EXPORTS)}, not {comic_format!r}")
        pages = self.page_paths(item)
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / f"{slugify(item.caption, max_length=60, empty='comic')}-{item.id}.{comic_format}"
        if comic_format == "pdf":
            return write_pdf(pages, target, DEFAULT_DPI)
        return write_cbz(pages, target, {"title": item.caption, "reading_order": item.reading_order})

    # --- search --------------------------------------------------------------------------

    def search(self, query: str, limit: int = 20) -> tuple[list[Item], str]:
        """Items ranked for ``query`` and the method used: ``"meaning"`` or ``"substring"``."""
        query = clean_caption(query, MAX_CAPTION_CHARS, "search text")
        if self.embedder is None:
            return self._substring_search(query, limit), "substring"
        self._backfill_embeddings()
        query_vector = self._embed_one(query)
        with self.backend.transaction() as cur:
            rows = cur.execute(
                f"SELECT {_COLUMNS}, embedding FROM items WHERE embedding_model = ?", (self.embedder.name,)
            )
            if not rows:
                return [], "meaning"
            matrix = np.stack([np.frombuffer(bytes(row["embedding"]), dtype=np.float32) for row in rows])
            scores = matrix @ query_vector
            order = np.argsort(-scores, kind="stable")[:limit]
            return self._items(cur, [rows[i] for i in order], [float(scores[i]) for i in order]), "meaning"

    def _substring_search(self, query: str, limit: int) -> list[Item]:
        words = query.split()
        where = " AND ".join([self.backend.like_sql()] * len(words))
        patterns = ["%" + re.sub(r"([\\%_])", r"\\\1", word) + "%" for word in words]
        with self.backend.transaction() as cur:
            rows = cur.execute(
                f"SELECT {_COLUMNS} FROM items WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?",
                (*patterns, int(limit)),
            )
            return self._items(cur, rows)

    def _backfill_embeddings(self) -> None:
        """Embed captions saved while the model was absent or under another embedding model."""
        with self.backend.transaction() as cur:
            stale = cur.execute(
                "SELECT id, caption FROM items WHERE embedding_model IS NULL OR embedding_model <> ?",
                (self.embedder.name,),
            )
        if not stale:
            return
        vectors = self.embedder.encode([row["caption"] for row in stale])
        with self.backend.transaction(write=True) as cur:
            for row, vector in zip(stale, vectors):
                # Only if the caption is unchanged: a concurrent rename has embedded its own text.
                cur.execute(
                    "UPDATE items SET embedding = ?, embedding_model = ? WHERE id = ? AND caption = ?",
                    (
                        self.backend.blob(vector.astype(np.float32).tobytes()),
                        self.embedder.name,
                        row["id"],
                        row["caption"],
                    ),
                )

    def _embed_one(self, text: str) -> np.ndarray | None:
        if self.embedder is None:
            return None
        return self.embedder.encode([text])[0].astype(np.float32)

    def _items(self, cur, rows: list[dict], scores: list[float] | None = None) -> list[Item]:
        """Items of ``rows``, with the pages of the comics among them (read in the caller's transaction)."""
        pages = self._pages(cur, [row["id"] for row in rows if row.get("kind") == COMIC])
        scores = scores or [None] * len(rows)
        return [self._item(row, score, pages.get(row["id"], ())) for row, score in zip(rows, scores)]

    @staticmethod
    def _pages(cur, item_ids: list[int]) -> dict[int, tuple[str, ...]]:
        """item id -> its page hashes in reading order, for those ids that have pages."""
        pages: dict[int, list[str]] = {}
        for start in range(0, len(item_ids), 500):  # well under every backend's limit on bound parameters
            chunk = item_ids[start : start + 500]
            rows = cur.execute(
                f"SELECT item_id, image_hash FROM item_pages WHERE item_id IN ({', '.join('?' * len(chunk))}) "
                "ORDER BY item_id, page_number",
                chunk,
            )
            for row in rows:
                pages.setdefault(int(row["item_id"]), []).append(row["image_hash"])
        return {item_id: tuple(hashes) for item_id, hashes in pages.items()}

    def _item(self, row: dict, score: float | None = None, pages: tuple[str, ...] = ()) -> Item:
        return Item(
            id=int(row["id"]),
            image_hash=row["image_hash"],
            caption=row["caption"],
            prompt=row["prompt"],
            params=json.loads(self.backend.params_from_db(row["params"])),
            created_at=self.backend.parse_time(row["created_at"]),
            embedding_model=row.get("embedding_model"),
            score=score,
            kind=row.get("kind") or IMAGE,
            reading_order=row.get("reading_order") or "ltr",
            exports=tuple(f for f in (row.get("exports") or "").split(",") if f),
            pages=pages,
        )


def _comic_options(pages, reading_order: str, exports) -> tuple[str, tuple[str, ...]]:
    """Check a comic's page count, reading order and export formats; the last two as stored."""
    if not isinstance(pages, (list, tuple)) or not pages:
        raise InvalidInput("a comic needs at least one page")
    if len(pages) > MAX_COMIC_PAGES:
        raise InvalidInput(f"a comic has at most {MAX_COMIC_PAGES} pages; got {len(pages)}")
    if reading_order not in READING_ORDERS:
        raise InvalidInput(f"reading order must be one of {', '.join(READING_ORDERS)}, not {reading_order!r}")
    unknown = [f for f in exports or () if f not in COMIC_FORMATS]
    if unknown:
        raise InvalidInput(f"unknown export format(s) {', '.join(map(repr, unknown))}: use {', '.join(COMIC_FORMATS)}")
    return reading_order, tuple(f for f in COMIC_FORMATS if f in (exports or ()))


def _params_text(params: dict | None) -> str:
    if params is None:
        return "{}"
    if not isinstance(params, dict):
        raise InvalidInput("generation parameters must be a mapping")
    try:
        text = json.dumps(params, sort_keys=True, allow_nan=False, default=str)
    except ValueError as exc:
        raise InvalidInput(f"generation parameters are not valid JSON: {exc}") from exc
    if len(text) > MAX_PARAMS_CHARS:
        raise InvalidInput(f"generation parameters take {len(text)} characters; the limit is {MAX_PARAMS_CHARS}")
    return text
