"""Hooks for the trainer: train only an adapter on a frozen base, checkpoint it, keep its EMA, save it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

from finetune.train.ema import EMA

from .errors import AdapterError
from .lora import DEFAULT_ADAPTER_NAME, LoraSettings, inject_lora, present_targets

LORA_PARAMETER_MARK = ".lora_"  # every LoRA factor's parameter name has it ("...qkv.lora_A.default.weight")


def is_lora_parameter(name: str) -> bool:
    return LORA_PARAMETER_MARK in name


def prepare_for_adapter_training(
    model: nn.Module, settings: LoraSettings, adapter_name: str = DEFAULT_ADAPTER_NAME
) -> list[nn.Parameter]:
    """Add a fresh LoRA adapter to `model` (in place, before any compile/DDP wrapping), freeze every base weight and
    return the adapter's parameters, the only ones to optimise. The model's output is unchanged until they train."""
    settings = LoraSettings(settings.rank, settings.alpha, present_targets(model, settings.targets), settings.dropout)
    inject_lora(model, settings, adapter_name)
    trainable = []
    for name, parameter in model.named_parameters():
        is_adapter = is_lora_parameter(name) and f".{adapter_name}." in name
        parameter.requires_grad_(is_adapter)
        if is_adapter:
            trainable.append(parameter)
    return trainable


class AdapterEMA(EMA):
    """EMA of the adapter's weights only: the frozen base never changes, and shadowing it would double its memory.
    Same interface as finetune.train.ema.EMA; inside `swapped_in`, adapter_state_dict gives the EMA factors."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {
            name: p.detach().float().clone() for name, p in model.named_parameters() if is_lora_parameter(name)
        }
        if not self.shadow:
            raise AdapterError("AdapterEMA: the model has no adapter parameters")

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        params = {name: p for name, p in model.named_parameters() if name in self.shadow}
        backup = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.shadow[name].to(p.dtype))
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(backup[name])
