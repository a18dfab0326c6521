"""Storage for the studio's catalogue: rows in SQLite or PostgreSQL, images on disk by content hash."""

from .errors import (
    CatalogueError,
    DatabaseUnavailable,
    ImageMissing,
    InvalidInput,
    ItemNotFound,
    SchemaTooNew,
)
from .store import MAX_CAPTION_CHARS, SORTS, Catalogue, Item, clean_caption

__all__ = [
    "Catalogue",
    "CatalogueError",
    "DatabaseUnavailable",
    "ImageMissing",
    "InvalidInput",
    "Item",
    "ItemNotFound",
    "MAX_CAPTION_CHARS",
    "SORTS",
    "SchemaTooNew",
    "clean_caption",
]
