"""Errors of the model hub: each message is one line meant for the user."""

from __future__ import annotations

import os

from data_pipeline.errors import UserError
from data_pipeline.oserrors import describe_os_error


class HubError(UserError, ValueError):
    """A name that cannot be resolved, fetched, verified or cached."""


class OfflineError(HubError):
    """The model is not cached and the network is forbidden."""


def hub_error_from(exc: OSError, path: str | os.PathLike) -> HubError:
    """A local file-system fault as a one-line HubError, worded like every command's OSError message; `path` is
    named when the error itself names no file (a write() on a full disk)."""
    if exc.filename is None and exc.errno is not None:
        exc = OSError(exc.errno, exc.strerror, os.fspath(path))
    return HubError(describe_os_error(exc))
