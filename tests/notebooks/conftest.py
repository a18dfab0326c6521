"""Tiny random models and tiny settings for running the notebooks and the quickstart in tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune.checkpoints import save_model_folder
from finetune.model import build_model, get_preset
from finetune.tokenizers import get_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]

# A 32px base (the size of the bundled one, so the evaluator and the dataset sizes match) and a
# 32->64 upsampler, both a fraction of the bundled models' cost.
TINY = {"xf_layers": 1, "num_res_blocks": 1}
TINY_BASE = {**get_preset("tiny-base"), **TINY}
TINY_UPSAMPLER = {**get_preset("tiny-upsample"), **TINY}


def _save(path: Path, options: dict, seed: int) -> Path:
    torch.manual_seed(seed)
    model = build_model(options)
    # GLIDE zero-initialises the output layers; random ones make captions and seeds change the images.
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.1)
    save_model_folder(path, model, options, get_tokenizer(options["tokenizer"], options["text_ctx"]))
    return path


@pytest.fixture(scope="session")
def quickstart_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quickstart_models")
    return {"base": _save(root / "base", TINY_BASE, 0), "upsampler": _save(root / "upsampler", TINY_UPSAMPLER, 1)}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
