"""Facts about the released checkpoints, kept as package data: each file's GLIDE options, its parameter count,
every state_dict key with its shape, and its size in bytes when known. A download is checked against them before
it enters the cache.

`AUTOCOMICS_GLIDE_MANIFEST` names another manifest in the same format (a mirror serving other checkpoints; the
tests' tiny ones).
"""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import HubError
from .names import released_model

MANIFEST_ENV = "AUTOCOMICS_GLIDE_MANIFEST"
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # every tensor of a released checkpoint is one
PACKAGED_MANIFEST = "glide_release.json.gz"


@lru_cache(maxsize=4)
def _read_manifest(path: str) -> dict[str, Any]:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    data = json.loads(raw)
    if not isinstance(data.get("checkpoints"), dict):
        raise HubError(f"release manifest {path} has no 'checkpoints' table")
    return data


def manifest_path() -> str:
    override = os.environ.get(MANIFEST_ENV, "").strip()
    return override or str(files("finetune.hub") / PACKAGED_MANIFEST)


def manifest_entry(name: str) -> dict[str, Any]:
    """{'file', 'size' (int or None), 'options', 'num_params', 'keys': {key: shape}} of a released model name."""
    model = released_model(name)
    path = manifest_path()
    try:
        checkpoints = _read_manifest(path)["checkpoints"]
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot read the release manifest {path}: {exc}") from None
    if model.manifest_key not in checkpoints:
        raise HubError(f"release manifest {path} has no entry {model.manifest_key!r} for {name}")
    return checkpoints[model.manifest_key]


def check_against_manifest(state_dict: Mapping[str, torch.Tensor], entry: Mapping[str, Any], what: str) -> None:
    """Raise HubError unless the state_dict has exactly the manifest's keys, each with its shape."""
    expected = {k: tuple(v) for k, v in entry["keys"].items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {list(state_dict[k].shape)} (expected {list(expected[k])})"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    problems = [
        f"{len(items)} {label} key(s), first: {'; '.join(items[:2])}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if items
    ]
    not_float = [
        f"{k} ({str(t.dtype).removeprefix('torch.')})" for k, t in state_dict.items() if t.dtype not in WEIGHT_DTYPES
    ]
    if not_float:
        problems.append(f"{len(not_float)} tensor(s) that are not float weights, first: {'; '.join(not_float[:2])}")
    if problems:
        raise HubError(f"{what} is not the released checkpoint: " + ", ".join(problems))
