"""Storage for the studio's catalogue: rows in SQLite or PostgreSQL, images on disk by content hash."""

from .errors import (
    CatalogueError,
    DatabaseUnavailable,
    ImageMissing,
    InvalidInput,
    ItemNotFound,
    SchemaTooNew,
)
from .store import COMIC, COMIC_EXPORTS, MAX_CAPTION_CHARS, MAX_COMIC_PAGES, SORTS, Catalogue, Item, clean_caption

__all__ = [
    "COMIC",
    "COMIC_EXPORTS",
    "Catalogue",
    "CatalogueError",
    "DatabaseUnavailable",
    "ImageMissing",
    "InvalidInput",
    "Item",
    "ItemNotFound",
    "MAX_CAPTION_CHARS",
    "MAX_COMIC_PAGES",
    "SORTS",
    "SchemaTooNew",
    "clean_caption",
]
