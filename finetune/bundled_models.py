"""Bundled small models, shipped as package data under finetune/bundled_weights/: the shapes pipeline (``base/``
and ``upsampler/`` model folders, named ``bundled``) and the emoji pipeline in ``emoji/`` (named
``bundled-emoji``; its art and weights are OpenMoji's CC BY-SA 4.0)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

BUNDLED_KINDS = ("base", "upsampler")
# pipeline name -> its folder under finetune/bundled_weights/ ("" = the folder itself)
BUNDLED_PIPELINES = {"bundled": "", "bundled-emoji": "emoji"}
DEFAULT_PIPELINE = "bundled"
TRAINING_RECIPE = "scripts/bundled/README.md"


def bundled_pipeline_path(pipeline: str = DEFAULT_PIPELINE) -> Path:
    """The pipeline folder holding a bundled pipeline's `base/` and `upsampler/` model folders."""
    if pipeline not in BUNDLED_PIPELINES:
        raise ValueError(f"unknown bundled pipeline {pipeline!r}; choose one of {', '.join(BUNDLED_PIPELINES)}")
    root = Path(str(files("finetune") / "bundled_weights"))
    return root / BUNDLED_PIPELINES[pipeline] if BUNDLED_PIPELINES[pipeline] else root


def bundled_model_path(kind: str, pipeline: str = DEFAULT_PIPELINE) -> Path:
    """Model folder of a bundled pipeline's "base" or "upsampler" model; a clear error when it is not installed."""
    if kind not in BUNDLED_KINDS:
        raise ValueError(f"unknown bundled model {kind!r}; choose one of {', '.join(BUNDLED_KINDS)}")
    path = bundled_pipeline_path(pipeline) / kind
    if (path / "config.json").is_file():
        return path
    if pipeline != DEFAULT_PIPELINE:
        raise FileNotFoundError(f"the {pipeline} {kind} model is not trained yet: see {TRAINING_RECIPE}")
    raise FileNotFoundError(
        f"no bundled {kind} model at {path}: this installation ships without bundled models. "
        "Pass a model folder explicitly (see `python -m finetune convert` and `python -m finetune train`)."
    )
