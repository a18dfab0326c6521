"""Tiny random GLIDE models and fixed inputs for the adapter tests."""

from __future__ import annotations

import torch

from finetune.adapters.lora import lora_layers
from finetune.model import build_model, get_preset
from tests.random_models import random_state_dict

VARIANTS = ("tiny-base", "tiny-upsample", "tiny-base-inpaint")


def tiny_model(preset: str = "tiny-base", seed: int = 0) -> torch.nn.Module:
    """A tiny model whose every layer (GLIDE's zero-initialised ones too) has random weights, in eval mode."""
    options = get_preset(preset)
    model = build_model(options)
    model.load_state_dict(random_state_dict(options, seed))
    return model.eval().requires_grad_(False)


def model_inputs(model, batch: int = 2, seed: int = 1) -> dict:
    """Fixed noise, timesteps, tokens (and low-res or inpainting inputs) for one forward pass."""
    g = torch.Generator().manual_seed(seed)
    size, ctx = model.image_size, model.text_ctx
    tokens = torch.randint(0, model.vocab_size, (batch, ctx), generator=g)
    inputs = {
        "x": torch.randn(batch, 3, size, size, generator=g),
        "timesteps": torch.tensor([10, 700][:batch]),
        "tokens": tokens,
        "mask": torch.arange(ctx)[None] < torch.tensor([[ctx // 2], [ctx]][:batch]),
    }
    if model.super_res:
        inputs["low_res"] = torch.randn(batch, 3, size // 4, size // 4, generator=g)
    if model.inpaint:
        inputs["inpaint_image"] = torch.randn(batch, 3, size, size, generator=g)
        inputs["inpaint_mask"] = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    return inputs


def randomise_lora(model, adapter_name: str = "default", seed: int = 2, std: float = 0.05) -> None:
    """Nonzero factors for an adapter (a fresh one has B = 0 and changes nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            if adapter_name in layer.lora_A:
                for factor in (layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight):
                    factor.copy_(torch.randn(factor.shape, generator=g) * std)


@torch.no_grad()
def output(model, inputs: dict) -> torch.Tensor:
    return model(**inputs)
