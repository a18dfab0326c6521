"""LoRA adapters for every GLIDE model (base, upsampler, inpainting), through peft.

- `add_lora` / `prepare_for_adapter_training`: wrap a model's target layers (DEFAULT_TARGETS) with a new adapter.
- `adapter_state_dict` / `load_adapter_state_dict` / `AdapterEMA`: what a trainer checkpoints and averages.
- `save_adapter_folder` / `read_adapter_config`: the adapter folder (adapter.safetensors + adapter_config.json).
- `apply_adapters` (sampling, several at once with scales) and `merge_adapters` (bake into a new model folder).
- `parse_adapter_spec` / `adapter_spec_argument`: the `PATH[:SCALE]` argument of every command line.
"""

from __future__ import annotations

from .apply import AppliedAdapter, adapters_disabled, apply_adapters, merge_adapters, merge_lora
from .errors import AdapterError
from .format import (
    AdapterFolder,
    adapter_state_dict,
    load_adapter_state_dict,
    read_adapter_config,
    save_adapter_folder,
)
from .lora import DEFAULT_TARGETS, KNOWN_TARGETS, LoraSettings, adapter_settings, add_lora, remove_lora
from .specs import AdapterSpec, adapter_spec_argument, parse_adapter_spec
from .training import AdapterEMA, is_lora_parameter, prepare_for_adapter_training

__all__ = [
    "DEFAULT_TARGETS",
    "KNOWN_TARGETS",
    "AdapterEMA",
    "AdapterError",
    "AdapterFolder",
    "AdapterSpec",
    "AppliedAdapter",
    "LoraSettings",
    "adapter_settings",
    "adapter_spec_argument",
    "adapter_state_dict",
    "adapters_disabled",
    "add_lora",
    "apply_adapters",
    "is_lora_parameter",
    "load_adapter_state_dict",
    "merge_adapters",
    "merge_lora",
    "parse_adapter_spec",
    "prepare_for_adapter_training",
    "read_adapter_config",
    "remove_lora",
    "save_adapter_folder",
]
