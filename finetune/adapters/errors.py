"""The adapter code's user-fixable error."""

from __future__ import annotations

from data_pipeline.errors import UserError


class AdapterError(UserError, ValueError):
    """An adapter that cannot be used as asked: a bad folder or config, another base model, a bad PATH:SCALE."""
