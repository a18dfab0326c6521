"""Caption cleaning: what the writer stores as KEY.txt and in KEY.json's `caption`/`captions`."""

from __future__ import annotations


def clean_caption(text: str | None) -> str:
    """Collapse whitespace (incl. newlines/tabs) and drop control characters."""
    if not text:
        return ""
    text = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in str(text))
    return " ".join(text.split())


def first_caption(caption: str | None, captions: list[str] | None) -> str:
    """The cleaned `caption`, or else the first of `captions` that is not empty after cleaning."""
    return clean_caption(caption) or next((c for c in (clean_caption(c) for c in captions or []) if c), "")


def all_captions(captions: list[str] | None, caption: str) -> list[str]:
    """Every known caption, cleaned, empty ones dropped; `[caption]` when none is left."""
    cleaned = [c for c in (clean_caption(c) for c in (captions or [caption])) if c]
    return cleaned or [caption]
