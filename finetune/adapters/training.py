"""Hooks for the trainer: train only an adapter on a frozen base, checkpoint it, keep its EMA, save it."""

from __future__ import annotations

import torch.nn as nn

from .lora import DEFAULT_ADAPTER_NAME, LoraSettings, add_lora

LORA_PARAMETER_MARK = ".lora_"  # every LoRA factor's parameter name has it ("...qkv.lora_A.default.weight")


def is_lora_parameter(name: str) -> bool:
    return LORA_PARAMETER_MARK in name


def prepare_for_adapter_training(
    model: nn.Module, settings: LoraSettings, adapter_name: str = DEFAULT_ADAPTER_NAME
) -> list[nn.Parameter]:
    """Add a fresh LoRA adapter to `model` (in place, before any compile/DDP wrapping), freeze every base weight and
    return the adapter's parameters, the only ones to optimise. The model's output is unchanged until they train."""
    add_lora(
        model, settings.rank, settings.alpha, settings.targets, adapter_name=adapter_name, dropout=settings.dropout
    )
    trainable = []
    for name, parameter in model.named_parameters():
        is_adapter = is_lora_parameter(name) and f".{adapter_name}." in name
        parameter.requires_grad_(is_adapter)
        if is_adapter:
            trainable.append(parameter)
    return trainable
