"""The Accelerate trainer: `train(TrainConfig(...))`, or `python -m finetune train --help` on the command line.

Modules in the order the data meets them: `config` (settings), `dataset_discovery` (the --data entries ->
shards), `stream`, `augment` and `masks` (batches: crops, empty captions, inpainting masks), `model_init` (the
starting weights), `trainer` (the loop), `guards`, `ema`, `monitor` (logs), `samples` (sample grids) and
`resume_state` (training checkpoints).
"""

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
