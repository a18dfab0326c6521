"""Bundled small models, shipped as package data under finetune/bundled_weights/ (a pipeline folder:
``base/`` and ``upsampler/`` model folders)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

BUNDLED_KINDS = ("base", "upsampler")


def bundled_pipeline_path() -> Path:
    """The pipeline folder holding the bundled `base/` and `upsampler/` model folders."""
    return Path(str(files("finetune") / "bundled_weights"))


def bundled_model_path(kind: str) -> Path:
    """Model folder of the bundled "base" or "upsampler" model; a clear error when it is not installed."""
    if kind not in BUNDLED_KINDS:
        raise ValueError(f"unknown bundled model {kind!r}; choose one of {', '.join(BUNDLED_KINDS)}")
    path = bundled_pipeline_path() / kind
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no bundled {kind} model at {path}: this installation ships without bundled models. "
            "Pass a model folder explicitly (see `python -m finetune convert` and `python -m finetune train`)."
        )
    return path
