"""Errors the catalogue raises; each message is meant to be shown to a user as is."""

from __future__ import annotations

from data_pipeline.errors import UserError


class CatalogueError(Exception):
    """Base class of every catalogue failure."""


class DatabaseUnavailable(CatalogueError):
    """The database cannot be opened or reached."""


class SchemaTooNew(CatalogueError):
    """The database was migrated by a newer version of this code."""


class ItemNotFound(CatalogueError):
    """No catalogue row has the given id (it may have been deleted by another user)."""


class ImageMissing(CatalogueError):
    """A row exists but its image file is gone from disk."""


class InvalidInput(CatalogueError, UserError, ValueError):
    """A caption, image or parameter set that the catalogue refuses to store."""
