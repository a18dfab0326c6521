"""Model ids: '<name>@<12 hex>', a stable name for the weights a model was loaded from.

The hash covers the config and weight files (not provenance.json, which records when and how a folder was written)
plus the choice of weights (EMA or raw for a folder, the preset for an OpenAI .pt file), so two loads of the same
weights get the same id and any change to them gets another. Sampled images record it, and an adapter records the
id of the model it was trained on so that it is never applied to another one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from data_pipeline.fsutil import file_sha256

_DIGESTS: dict[tuple[str, int, int], str] = {}
_IGNORED_FILES = ("provenance.json",)


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered for the process (keyed by size and mtime) so a model is hashed once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def model_id_for(path: Path, extra: str = "") -> str:
    """'<name>@<12 hex>': the folder or file name and a hash of its config and weights (and of `extra`)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.suffix in (".safetensors", ".json") and p.name not in _IGNORED_FILES
        )
    else:
        files = [path]
    h = hashlib.sha256(extra.encode())
    for p in files:
        h.update(p.name.encode() + b"\0" + file_digest(p).encode())
    name = path.name if path.is_dir() else path.stem
    if path.is_dir() and name in ("base", "upsampler"):
        name = f"{path.parent.name}/{name}"
    return f"{name}@{h.hexdigest()[:12]}"


def folder_model_id(path: Path, use_ema: bool = True) -> str:
    """Id of a model folder loaded with (`use_ema`) or without its EMA weights."""
    return model_id_for(path, "ema" if use_ema else "raw")


def checkpoint_model_id(path: Path, preset: str) -> str:
    """Id of an OpenAI .pt checkpoint read with `preset`."""
    return model_id_for(path, preset)


def same_weights(id_a: str, id_b: str) -> bool:
    """Whether two ids name the same weights: their hashes agree (the name part changes when a folder is renamed)."""
    return id_a.rpartition("@")[2] == id_b.rpartition("@")[2] and "@" in id_a and "@" in id_b
