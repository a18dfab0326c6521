"""The Accelerate trainer: `train(TrainConfig(...))`, or `python -m finetune train --help` on the command line."""

from .config import ConfigError, TrainConfig, build_config, load_config_file
from .monitor import read_metrics
from .trainer import TrainResult, train

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainResult",
    "build_config",
    "load_config_file",
    "read_metrics",
    "train",
]
