"""The one error type for mistakes a user can fix: bad flags, bad input files, a model that is not there.

Every package's own error classes derive from `UserError`, and every `python -m ...` entry point prints one as a
single `error: ...` line with exit status 2 (`data_pipeline.commands.run_command_line`). Anything else is a bug
and keeps its traceback. It lives on the lowest floor of the layering so all three packages can share it.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, worded so the message alone says what to change."""
