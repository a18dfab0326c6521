"""Tiny model folders with random weights, shared by the sampling, notebook and studio tests."""

from __future__ import annotations

from pathlib import Path

import torch

from finetune.model import build_model
from finetune.model_folder import save_model_folder
from finetune.tokenizers import get_tokenizer


def save_random_model_folder(path: Path, options: dict, seed: int) -> Path:
    """A model folder at `options` with seeded random weights.

    GLIDE zero-initialises its output layers, which would make eps 0 whatever the caption; those are
    randomised too, so captions, guidance and seeds visibly change the images."""
    model = build_model(options)
    model.load_state_dict(random_state_dict(options, seed))
    save_model_folder(path, model, options, get_tokenizer(options["tokenizer"], options["text_ctx"]))
    return path


def random_state_dict(options: dict, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights with GLIDE's zero-initialised layers randomised too (so outputs depend on inputs)."""
    torch.manual_seed(seed)
    model = build_model(options)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.1)
    return model.state_dict()
