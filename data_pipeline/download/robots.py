"""X-Robots-Tag directives that forbid using an image for datasets."""

from __future__ import annotations

from collections.abc import Iterable

# img2dataset's default list.
DEFAULT_DISALLOWED_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")

# Directives that carry their own "name: value" colon, so the text before it is not a bot name.
_VALUED_DIRECTIVES = {"max-snippet", "max-image-preview", "max-video-preview", "unavailable_after"}


def disallowed_by_robots_tag(
    header_values: Iterable[str],
    user_agent_token: str,
    disallowed: Iterable[str] = DEFAULT_DISALLOWED_DIRECTIVES,
) -> str | None:
    """Return the first directive that forbids us, or None.

    Each header value is either ``"dir, dir"`` (applies to every bot) or ``"botname: dir, dir"``
    (applies only to that bot); the latter counts only when the bot name is our token.
    """
    blocked = {d.strip().lower() for d in disallowed}
    token = user_agent_token.strip().lower()
    for value in header_values:
        scope, directives = None, value
        head, sep, rest = value.partition(":")
        if sep and head.strip().lower() not in _VALUED_DIRECTIVES and "," not in head:
            scope, directives = head.strip().lower(), rest
        if scope is not None and scope != token:
            continue
        for directive in directives.split(","):
            name = directive.strip().lower()
            if name in blocked:
                return name
    return None
