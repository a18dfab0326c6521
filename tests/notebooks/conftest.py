"""Tiny random models and tiny settings for running the notebooks and the quickstart in tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from finetune.model import get_preset

from random_models import save_random_model_folder

REPO_ROOT = Path(__file__).resolve().parents[2]

# A 32px base (the size of the bundled one, so the evaluator and the dataset sizes match) and a
# 32->64 upsampler, both a fraction of the bundled models' cost.
TINY = {"xf_layers": 1, "num_res_blocks": 1}
TINY_BASE = {**get_preset("tiny-base"), **TINY}
TINY_UPSAMPLER = {**get_preset("tiny-upsample"), **TINY}


_save = save_random_model_folder


@pytest.fixture(scope="session")
def quickstart_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quickstart_models")
    return {"base": _save(root / "base", TINY_BASE, 0), "upsampler": _save(root / "upsampler", TINY_UPSAMPLER, 1)}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
