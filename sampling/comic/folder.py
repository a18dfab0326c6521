"""One comic per output folder: a rerun continues the comic the folder holds, and a different comic (another
title) is refused instead of being mixed into it or overwriting it silently."""

from __future__ import annotations

from pathlib import Path

from data_pipeline.errors import UserError

from .script import ComicScript


class OtherComicError(UserError, ValueError):
    """The output folder already holds a different comic."""


def comic_identity(script: ComicScript) -> dict:
    """What comic.json records about the comic beyond its title (read back by the exporters)."""
    return {"writer": script.writer, "summary": script.summary, "reading_order": script.reading_order}


def check_same_comic(previous: dict, script: ComicScript, out_dir: Path, overwrite: bool) -> None:
    """Refuse `out_dir` when its comic.json names another title, unless `overwrite`."""
    if overwrite or "title" not in previous or previous.get("title") == script.title:
        return
    raise OtherComicError(
        f"{out_dir} holds another comic ({previous.get('title')!r}, not {script.title!r}); "
        "use another --out folder, or pass --overwrite to replace it"
    )
