"""LoRA layers on GLIDE's UNet and caption transformer, injected with peft.

peft wraps nn.Linear natively. GLIDE's attention projections are `PointwiseConv1d` (a kernel-1 Conv1d applied to
channels-last sequences, so checkpoints keep OpenAI's [out, in, 1] weights): peft's own Conv1d LoRA would convolve
over the wrong axis, so they get `PointwiseLoraLayer`, peft's Linear LoRA layer whose merged delta has the
trailing kernel axis, registered through peft's custom-module hook. The residual blocks' 3x3 convolutions are plain
nn.Conv2d, which peft wraps natively. Everything else (injection, scaling, several
adapters at once, merging) is peft's.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from peft.tuners.tuners_utils import set_adapter

from finetune.model.layers import PointwiseConv1d

from .errors import AdapterError
from .settings import (  # noqa: F401 - re-exported: the settings are part of this module's interface
    DEFAULT_RANK,
    DEFAULT_TARGETS,
    KNOWN_TARGETS,
    MAX_ALPHA,
    MAX_RANK,
    LoraSettings,
    check_alpha,
    check_rank,
    check_targets,
)

DEFAULT_ADAPTER_NAME = "default"


class PointwiseLoraLayer(PeftLoraLinear):
    """peft's Linear LoRA layer around a PointwiseConv1d: the forward is the same low-rank update on channels-last
    input; only the merged delta needs the conv weight's trailing kernel axis."""

    def get_delta_weight(self, adapter) -> torch.Tensor:
        return super().get_delta_weight(adapter).unsqueeze(-1)


def base_layer_of(module: nn.Module) -> nn.Module:
    return module.get_base_layer() if isinstance(module, LoraLayer) else module


def _matching_target(name: str, targets: Sequence[str]) -> str | None:
    for target in targets:
        if name == target or name.endswith("." + target):
            return target
    return None


def target_module_names(model: nn.Module, targets: Sequence[str]) -> dict[str, str]:
    """{module name: target} of the layers `targets` select in `model` (wrapped or not), in model order."""
    found = {}
    for name, module in model.named_modules():
        target = _matching_target(name, targets)
        if target is not None and isinstance(base_layer_of(module), (nn.Linear, nn.Conv2d, PointwiseConv1d)):
            found[name] = target
    return found


def present_targets(model: nn.Module, targets: Sequence[str]) -> tuple[str, ...]:
    """The targets that select at least one layer of `model`; an error when none does."""
    selected = set(target_module_names(model, targets).values())
    if not selected:
        raise AdapterError(f"none of the LoRA targets {', '.join(targets)} is a layer of this model")
    return tuple(t for t in targets if t in selected)


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


def add_lora(
    model: nn.Module,
    rank: int,
    alpha: float | None = None,
    targets: Sequence[str] = DEFAULT_TARGETS,
    *,
    adapter_name: str = DEFAULT_ADAPTER_NAME,
    dropout: float = 0.0,
) -> LoraSettings:
    """Wrap `model`'s target layers (in place) with a fresh LoRA adapter; returns its settings, with the targets
    this model has. B starts at zero, so the model's output is unchanged until the adapter trains."""
    settings = LoraSettings(rank, alpha, tuple(targets), dropout)
    settings = LoraSettings(rank, settings.alpha, present_targets(model, settings.targets), dropout)
    inject_lora(model, settings, adapter_name)
    return settings


def inject_lora(model: nn.Module, settings: LoraSettings, adapter_name: str) -> list[str]:
    """Add adapter `adapter_name` with `settings` to the layers it targets; returns their module names."""
    if any(adapter_name in layer.lora_A for _, layer in lora_layers(model)):
        raise AdapterError(f"the model already has an adapter named {adapter_name!r}")
    names = list(target_module_names(model, settings.targets))
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=names,
        bias="none",
    )
    config._register_custom_module({PointwiseConv1d: PointwiseLoraLayer})
    # peft freezes every non-LoRA parameter of the model it injects into; only the new adapter trains. It warns
    # when a model already holds an adapter, which is how several are applied at once.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
        inject_adapter_in_model(config, model, adapter_name=adapter_name)
    return names


def set_active_adapters(model: nn.Module, scales: dict[str, float]) -> None:
    """Make exactly the adapters named in `scales` active, each at its scale (1 = as trained, 0 = off), frozen."""
    set_adapter(model, list(scales), inference_mode=True)
    for _, layer in lora_layers(model):
        for adapter_name, scale in scales.items():
            layer.set_scale(adapter_name, scale)


# Where a fused layer keeps its weights from before the fuse (a plain attribute: not in the state dict).
_WEIGHT_BEFORE_FUSE = "autocomics_weight_before_fuse"


def merge_active(layer: LoraLayer, keep_original: bool = False) -> None:
    """Add the layer's active adapters' scaled updates into its base weights (peft's merge: the layer then runs as
    its base layer alone, at no extra cost). `keep_original`: keep a copy of the weights so that removing the
    adapters restores them bit for bit (subtracting the update again would leave float rounding, which adds up
    over many swaps in half precision)."""
    if keep_original:
        setattr(layer, _WEIGHT_BEFORE_FUSE, layer.get_base_layer().weight.detach().clone())
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    layer.merge(safe_merge=True, adapter_names=active)


def remove_lora(model: nn.Module, keep_merged: bool = False) -> None:
    """Put every wrapped layer's original module back, its weights as they were before any adapter was fused into
    them unless `keep_merged` (then merged updates stay in the weights)."""
    for name, layer in list(lora_layers(model)):
        original = getattr(layer, _WEIGHT_BEFORE_FUSE, None)
        if not keep_merged and original is not None:
            with torch.no_grad():
                layer.get_base_layer().weight.copy_(original)  # the layer is dropped: no need to unmerge first
        elif not keep_merged and layer.merged:
            layer.unmerge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):  # the record peft keeps on a model it injected into
        del model.peft_config


def adapter_settings(model: nn.Module, adapter_name: str = DEFAULT_ADAPTER_NAME) -> LoraSettings:
    """The rank, alpha and targets of the model's adapter `adapter_name` (what its folder's config records)."""
    layers = {name: layer for name, layer in lora_layers(model) if adapter_name in layer.lora_A}
    if not layers:
        raise AdapterError(f"the model has no adapter named {adapter_name!r}")
    first = next(iter(layers.values()))
    wrapped_targets = {target_module_names(model, tuple(KNOWN_TARGETS)).get(name) for name in layers}
    targets = tuple(t for t in KNOWN_TARGETS if t in wrapped_targets)
    return LoraSettings(first.r[adapter_name], first.lora_alpha[adapter_name], targets)
