"""Errors of the model hub: each message is one line meant for the user."""

from __future__ import annotations

from data_pipeline.errors import UserError


class HubError(UserError, ValueError):
    """A name that cannot be resolved, fetched, verified or cached."""


class OfflineError(HubError):
    """The model is not cached and the network is forbidden."""
