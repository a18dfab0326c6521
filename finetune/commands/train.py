"""`python -m finetune train`: fine-tune or train a model (also `accelerate launch -m finetune train`)."""

from __future__ import annotations

import argparse

from finetune.train import train
from finetune.train.config import add_arguments, config_from_args

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = (
    "Train with Accelerate (one CPU, one GPU, or many with `accelerate launch -m finetune train`). "
    "Settings come from --config (YAML/TOML) and flags; flags win. The resolved settings, checkpoints, "
    "TensorBoard logs, sample grids and the final model folder go to --run-dir."
)


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when done, 128 + the signal's number when a signal stopped the run (after a checkpoint)."""
    result = train(config_from_args(args))
    if result.interrupted:
        return 128 + (result.signal or 0)
    if result.model_dir is not None and result.is_main:
        print(f"done: {result.step} steps; model folder {result.model_dir}")
    if result.adapter_dir is not None and result.is_main:
        print(f"done: {result.step} steps; adapter folder {result.adapter_dir}")
    return 0
