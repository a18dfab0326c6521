"""Adapter runs (`--adapter lora`): the --init model stays frozen and only a LoRA adapter trains.

The trainer calls these at its model set-up, checkpoint, resume, sample-grid and export points. A checkpoint holds
the adapter's factors only (plus the optimizer and the adapter's EMA): a resumed run rebuilds the base from --init,
checks it is still the same weights (by model id), re-injects the adapter and loads it. The export is an adapter
folder (run_dir/adapter) recording the base model's id, so sampling refuses to apply it to another model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

# The package loads its peft-based modules on first attribute use: peft takes seconds to import, and only
# adapter runs need it.
import finetune.adapters as adapters
from finetune.model_id import checkpoint_model_id, folder_model_id, same_weights

from .config import ConfigError, TrainConfig
from .model_init import INPUT_CONVERTED_NOTE, ModelSetup, resolve_init

if TYPE_CHECKING:
    from finetune.adapters import LoraSettings

EXPORT_DIR = "adapter"
GRID_GAP_PX = 8  # white columns between the grid with the adapter and the one without
GRID_LAYOUT_NOTE = "sample grids: left, with the adapter; right, the base model without it"


@dataclass
class AdapterRun:
    """What an adapter run knows beyond the trainer's own state."""

    settings: LoraSettings  # as injected: the targets this model has
    base_model_id: str  # of the --init weights (finetune.model_id), recorded in checkpoints and the export
    base_grid: np.ndarray | None = None  # the sample grid without the adapter: the same at every step


def lora_settings(config: TrainConfig) -> LoraSettings:
    return adapters.LoraSettings(config.lora_rank, config.lora_alpha or None, tuple(config.lora_targets))


def init_model_id(config: TrainConfig, setup: ModelSetup) -> str:
    """The id sampling computes when it loads the --init weights: a folder's with its EMA choice, or a .pt's with
    its preset (a released model's name stands for its folder in the model cache)."""
    path = Path(resolve_init(config.init))
    if path.is_dir():
        return folder_model_id(path, config.init_from_ema)
    return checkpoint_model_id(path, setup.preset)


def check_unconverted(setup: ModelSetup) -> None:
    """An adapter applies to the --init weights as they are; a run that converts them has no such base."""
    converted = [n for n in setup.notes if n.startswith(INPUT_CONVERTED_NOTE)]
    if setup.vocab_swapped or converted:
        what = "swaps its vocabulary" if setup.vocab_swapped else "converts its input convolution"
        raise ConfigError(
            f"--adapter trains on the --init model as it is, but this run {what}; fine-tune the converted model "
            "first (without --adapter), then train an adapter on its model folder"
        )


def start(config: TrainConfig, setup: ModelSetup) -> AdapterRun:
    """Inject a fresh adapter into the (unwrapped, uncompiled) model and freeze everything else."""
    check_unconverted(setup)
    base_model_id = init_model_id(config, setup)
    adapters.prepare_for_adapter_training(setup.model, lora_settings(config))
    return AdapterRun(adapters.adapter_settings(setup.model), base_model_id)


def check_resumed_base(run: AdapterRun, state: dict[str, Any], config: TrainConfig) -> None:
    """The rebuilt base must be the weights the adapter was trained on so far."""
    saved = (state.get("adapter") or {}).get("base_model_id")
    if not saved:
        raise ConfigError("the checkpoint records no adapter base model: it is not from an --adapter run")
    if not same_weights(saved, run.base_model_id):
        raise ConfigError(
            f"--init {config.init} is now model {run.base_model_id}, but the run trained its adapter on "
            f"{saved}; resume needs the same base weights"
        )


def checkpoint_fields(run: AdapterRun | None) -> dict[str, Any]:
    """What state.json records about the adapter (nothing for a full fine-tune)."""
    if run is None:
        return {}
    settings = run.settings
    return {
        "adapter": {
            "base_model_id": run.base_model_id,
            "rank": settings.rank,
            "alpha": settings.alpha,
            "targets": list(settings.targets),
        }
    }


def trained_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's factors (what a checkpoint of an adapter run holds instead of the model's weights)."""
    return adapters.adapter_state_dict(model)


def load_trained_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    adapters.load_adapter_state_dict(model, state)


def ema_filter():
    """The EMA of an adapter run shadows the adapter's factors only (the frozen base never changes)."""
    return adapters.is_lora_parameter


def base_only(model: torch.nn.Module):
    """The frozen base model's behaviour for the duration (the adapter switched off)."""
    return adapters.adapters_disabled(model)


def side_by_side(run: AdapterRun, model: torch.nn.Module, draw) -> np.ndarray:
    """`draw(model)` with the adapter, beside the same grid without it (drawn once: the base is frozen)."""
    with_adapter = draw(model)
    if run.base_grid is None:
        with adapters.adapters_disabled(model):
            run.base_grid = draw(model)
    gap = np.full((with_adapter.shape[0], GRID_GAP_PX, with_adapter.shape[2]), 255, dtype=with_adapter.dtype)
    return np.concatenate([with_adapter, gap, run.base_grid], axis=1)


def export(run: AdapterRun, out: Path, model: torch.nn.Module, ema, config: TrainConfig, dataset, step: int) -> Path:
    """The adapter (its EMA weights when there is an EMA) as an adapter folder at `out`, atomically."""
    provenance = {
        "init": config.init,
        "dataset": dataset.description,
        "dataset_manifest_sha256": dataset.manifest_sha256,
        "trainer_config": config.to_dict(),
        "steps": step,
        "ema": ema is not None,
    }
    with ema.swapped_in(model) if ema is not None else contextlib.nullcontext():
        adapters.save_adapter_folder(model, out, run.base_model_id, provenance)
    return out
