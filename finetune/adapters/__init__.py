"""LoRA adapters for every GLIDE model (base, upsampler, inpainting), through peft.

- `settings` (no peft): `LoraSettings`, `DEFAULT_RANK`, `DEFAULT_TARGETS` / `KNOWN_TARGETS`, their bounds and checks.
- `lora`: `add_lora`, `adapter_settings`, `remove_lora`.
- `training`: `prepare_for_adapter_training`, `is_lora_parameter` (for `EMA(..., parameter_filter=...)`).
- `format`: the adapter folder (adapter.safetensors + adapter_config.json): `save_adapter_folder`,
  `read_adapter_config`, `adapter_state_dict` / `load_adapter_state_dict` (checkpoints).
- `apply`: `apply_adapters` (sampling, several at once with scales), `merge_adapters` (a new model folder),
  `adapters_disabled` (the base's output, for side-by-side samples).
- `specs`: `parse_adapter_spec` / `adapter_spec_argument`, the `PATH[:SCALE]` argument of every command line.
- `command`: `python -m finetune adapter merge`.

The names above are importable from `finetune.adapters` too, loaded on first use: peft (and the transformers it
imports) takes seconds to load, and command lines import `finetune.adapters.specs` to parse their arguments
whether or not an adapter is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "apply": ("AppliedAdapter", "adapters_disabled", "apply_adapters", "merge_adapters", "merge_lora"),
    "errors": ("AdapterError",),
    "format": (
        "AdapterFolder",
        "adapter_state_dict",
        "load_adapter_state_dict",
        "read_adapter_config",
        "save_adapter_folder",
    ),
    "lora": ("adapter_settings", "add_lora", "remove_lora"),
    "settings": ("DEFAULT_RANK", "DEFAULT_TARGETS", "KNOWN_TARGETS", "LoraSettings"),
    "specs": ("AdapterSpec", "adapter_spec_argument", "parse_adapter_spec"),
    "training": ("is_lora_parameter", "prepare_for_adapter_training"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
