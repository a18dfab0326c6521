"""Adapters on a loaded model for sampling (several at once, each with a scale), and merged into a model folder."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError

from finetune.model_folder import ModelFolderError, load_model_folder, write_model_folder
from finetune.model_id import folder_model_id, model_id_for

from .errors import AdapterError
from .format import load_adapter_state_dict, read_adapter
from .lora import inject_lora, lora_layers, merge_active, remove_lora, set_active_adapters
from .specs import AdapterSpec, check_scale

AdapterArgument = AdapterSpec | tuple[str | os.PathLike, float]


@dataclass(frozen=True)
class AppliedAdapter:
    """An adapter applied to a model: its name inside the model, folder, scale and id (for image metadata)."""

    name: str
    path: Path
    scale: float
    adapter_id: str

    def metadata(self) -> dict:
        return {"path": str(self.path), "id": self.adapter_id, "scale": self.scale}


def as_spec(adapter: AdapterArgument) -> AdapterSpec:
    if isinstance(adapter, AdapterSpec):
        return adapter
    path, scale = adapter
    return AdapterSpec(Path(path), check_scale(float(scale)))


def apply_adapters(
    model: nn.Module, adapters: Sequence[AdapterArgument], *, base_model_id: str, fuse: bool = False
) -> list[AppliedAdapter]:
    """Make `adapters` (folder, scale) the model's adapters, replacing any applied before (an empty list removes
    them all and restores the base exactly). `base_model_id` is the
    id of the model's weights (finetune.model_id); an adapter trained on other weights is refused. Every adapter is
    checked before the model changes.

    Unfused, the adapters run as separate low-rank layers beside the weights (they can be switched off, e.g. for
    side-by-side samples); `fuse` adds their updates into the weights for inference, so a sampled image costs what
    it costs without adapters (a rank-8 adapter on every layer including the convolutions adds ~35% per image
    unfused), at the memory of a copy of the fused layers' weights, which are put back when the adapters are
    replaced. merge_lora bakes them in for good."""
    specs = [as_spec(a) for a in adapters]
    checked = [read_adapter(spec.path, model, base_model_id) for spec in specs]
    remove_lora(model)
    applied = []
    for index, (spec, (folder, tensors)) in enumerate(zip(specs, checked)):
        name = f"adapter{index}"
        inject_lora(model, folder.settings, name)
        load_adapter_state_dict(model, tensors, name)
        applied.append(AppliedAdapter(name, spec.path, spec.scale, model_id_for(spec.path)))
    if applied:
        set_active_adapters(model, {a.name: a.scale for a in applied})
        if fuse:
            for _, layer in lora_layers(model):
                merge_active(layer, keep_original=True)
    model.train(model.training)  # the new layers take the model's mode
    return applied


def merge_lora(model: nn.Module) -> None:
    """Add every active adapter's scaled low-rank update into its layer's weights and remove the adapter layers."""
    for _, layer in lora_layers(model):
        if not layer.merged:
            merge_active(layer)
    remove_lora(model, keep_merged=True)


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """The base model's behaviour for the duration (e.g. for samples with and without the adapter side by side)."""
    layers = [layer for _, layer in lora_layers(model)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def merge_adapters(
    model_folder: str | os.PathLike,
    adapters: Sequence[AdapterArgument],
    out_dir: str | os.PathLike,
    *,
    use_ema: bool = True,
    dtype: torch.dtype | None = None,
) -> Path:
    """A new model folder at `out_dir`: `model_folder`'s weights (EMA ones when present and `use_ema`) with
    `adapters` baked in at their scales, written atomically. `dtype`: storage dtype (float32 when None)."""
    model_folder, out_dir = Path(model_folder), Path(out_dir)
    if out_dir.resolve() == model_folder.resolve():
        raise AdapterError(f"--out {out_dir} is the base model's own folder; write the merged model elsewhere")
    if not adapters:
        raise AdapterError("no adapters to merge")
    try:
        loaded = load_model_folder(model_folder, use_ema=use_ema)
    except (ModelFolderError, SafetensorError, KeyError, ValueError) as exc:
        raise AdapterError(f"{model_folder}: cannot load the model folder: {exc}") from None
    base_model_id = folder_model_id(model_folder, use_ema)
    applied = apply_adapters(loaded.model, adapters, base_model_id=base_model_id)
    merge_lora(loaded.model)
    provenance = {
        "merged_adapters": {
            "base_model": str(model_folder),
            "base_model_id": base_model_id,
            "adapters": [a.metadata() for a in applied],
        }
    }
    tokenizer = loaded.tokenizer if loaded.config.get("tokenizer_files") else None
    return write_model_folder(
        out_dir,
        loaded.model.state_dict(),
        loaded.options,
        tokenizer,
        provenance=provenance,
        preset=loaded.config.get("preset"),
        dtype=dtype,
    )
