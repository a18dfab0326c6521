"""Tiny random models for the sampling tests (the bundled models are not needed)."""

from __future__ import annotations

import pytest
import torch
from random_models import save_random_model_folder

from finetune.model import get_preset
from sampling.loading import load_models

# 16px base, 16->32 upsampler: small enough for many sampling runs in a few seconds.
TINY = {"xf_layers": 1, "num_res_blocks": 1}
TINY_OPTIONS = {
    "base": {**get_preset("tiny-base"), **TINY, "image_size": 16, "channel_mult": "1,2", "attention_resolutions": "8"},
    "upsampler": {
        **get_preset("tiny-upsample"),
        **TINY,
        "image_size": 32,
        "channel_mult": "1,1,2",
        "attention_resolutions": "8",
    },
    "base-inpaint": {
        **get_preset("tiny-base-inpaint"),
        **TINY,
        "image_size": 16,
        "channel_mult": "1,2",
        "attention_resolutions": "8",
    },
    "upsampler-inpaint": {
        **get_preset("tiny-upsample-inpaint"),
        **TINY,
        "image_size": 32,
        "channel_mult": "1,1,2",
        "attention_resolutions": "8",
    },
}
# Few steps keep each test fast; the samplers' defaults are exercised by the diffusion tests and the bench.
FAST_ARGS = ["--steps", "3", "--upsample-steps", "3", "--device", "cpu", "--quiet"]


_save = save_random_model_folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{'pipeline': folder with base/ + upsampler/, 'inpaint': folder with inpainting base/ + upsampler/}."""
    root = tmp_path_factory.mktemp("tiny_models")
    _save(root / "pipeline" / "base", TINY_OPTIONS["base"], 0)
    _save(root / "pipeline" / "upsampler", TINY_OPTIONS["upsampler"], 1)
    _save(root / "inpaint" / "base", TINY_OPTIONS["base-inpaint"], 2)
    _save(root / "inpaint" / "upsampler", TINY_OPTIONS["upsampler-inpaint"], 3)
    return {"pipeline": root / "pipeline", "inpaint": root / "inpaint"}


@pytest.fixture(scope="session")
def tiny_options():
    return TINY_OPTIONS


@pytest.fixture(scope="session")
def fast_args():
    return list(FAST_ARGS)


@pytest.fixture(autouse=True)
def _one_thread():
    """Deterministic, and much faster than fighting over shared cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def models(tiny_models):
    """The tiny base + upsampler pair, loaded once per test module."""
    return load_models(str(tiny_models["pipeline"]), torch.device("cpu"))


@pytest.fixture(scope="module")
def base_only(tiny_models):
    """The tiny pair's base alone."""
    return load_models(str(tiny_models["pipeline"]), torch.device("cpu"), use_upsampler=False)
