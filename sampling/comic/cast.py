"""A comic script's cast: characters with a description and an optional LoRA adapter, found in panels by name.

A panel's characters are those its `cast` list names, else every cast name its caption contains as a whole word
(any case: "Zorp waves" names zorp, "zorpish" does not). Adapter paths in a script are `PATH[:SCALE]`, relative to
the script's folder; a script the studio runs must keep every adapter inside the studio's adapters folder (checked
on the resolved path, so `..` and symlinks cannot leave it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from finetune.adapters.specs import AdapterSpec, check_scale

# Names are words people type in captions: a letter, then letters, digits, spaces, hyphens or apostrophes.
NAME_PATTERN = re.compile(r"[^\W\d_][\w' -]*")


class CastAdapterError(ValueError):
    """An adapter path a script may not use; the script parser adds the file, line and field."""


@dataclass(frozen=True)
class CastMember:
    name: str  # as written in the script; matched in any case
    description: str = ""  # put in the prompt of every panel the character is in
    adapter: AdapterSpec | None = None


def check_name(name: str, max_chars: int) -> str:
    """A usable cast name (stripped); ValueError with the reason otherwise."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > max_chars or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"cast name {name!r} must be 1-{max_chars} characters: a letter, then letters, digits, spaces, - or '"
        )
    return name


def named_in(caption: str, name: str) -> bool:
    """Whether `caption` contains `name` as a whole word (or words), in any case."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", caption, flags=re.IGNORECASE) is not None


def cast_in_panel(cast: Sequence[CastMember], explicit: Sequence[str] | None, caption: str) -> tuple[CastMember, ...]:
    """The members a panel shows, in cast order: those `explicit` names (any case), else those its caption names."""
    if explicit is not None:
        wanted = {name.lower() for name in explicit}
        return tuple(m for m in cast if m.name.lower() in wanted)
    return tuple(m for m in cast if named_in(caption, m.name))


def split_scale(text: str, base: Path) -> tuple[str, float]:
    """'PATH' or 'PATH:SCALE' -> (path text, scale); a path that exists as written (relative to `base`) wins."""
    if (base / text).expanduser().exists():
        return text, 1.0
    path, sep, scale_text = text.rpartition(":")
    if not sep or not path:
        return text, 1.0
    try:
        scale = float(scale_text)
    except ValueError:
        return text, 1.0  # a colon in a folder that does not exist: reported as a missing folder when used
    return path, check_scale(scale)


def parse_script_adapter(text: str, base_dir: Path | None, adapter_root: Path | None) -> AdapterSpec:
    """An adapter named by a script: relative to `base_dir` (the script's folder), or with `adapter_root` set,
    relative to it and required to lie inside it. Raises ValueError (AdapterError for a bad scale)."""
    text = text.strip()
    if not text:
        raise ValueError("empty adapter path; expected PATH or PATH:SCALE")
    base = adapter_root if adapter_root is not None else (base_dir or Path("."))
    path_text, scale = split_scale(text, base)
    path = Path(path_text).expanduser()
    if adapter_root is not None:
        root = adapter_root.resolve()
        resolved = (root / path).resolve()
        if resolved != root and root not in resolved.parents:
            raise CastAdapterError(f"adapter {path_text!r} is outside the adapters folder {root}")
        return AdapterSpec(resolved, scale)
    return AdapterSpec(path if path.is_absolute() else base / path, scale)
