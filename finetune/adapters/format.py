"""The adapter folder: `adapter.safetensors` (the LoRA factors) and `adapter_config.json` (format version, rank,
alpha, targets, the id of the base model it was trained on, provenance).

Tensor names are the base model's module names plus `.lora_A.weight` [rank, in] and `.lora_B.weight` [out, rank],
peft's and diffusers' naming without a wrapper prefix. Safetensors only: nothing is ever unpickled. A folder is
checked against the model it is for (config fields, base model id, every tensor's name, dtype and shape read from
the file's header) before any tensor is read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from data_pipeline.fsutil import atomic_write_json, publish_dir
from finetune.model_folder import code_version, read_json_object, unwrap_model, write_safetensors
from finetune.model_id import same_weights

from .errors import AdapterError
from .lora import (
    DEFAULT_ADAPTER_NAME,
    LoraSettings,
    adapter_settings,
    base_layer_of,
    check_alpha,
    check_rank,
    lora_layers,
    target_module_names,
)
from .settings import CONFIG_FILE, WEIGHTS_FILE

FORMAT_VERSION = 1
KIND = "lora"
CONFIG_KEYS = ("format_version", "kind", "rank", "alpha", "targets", "base_model_id", "provenance")
MAX_CONFIG_BYTES = 1 << 16
FLOAT_DTYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class AdapterFolder:
    """An adapter folder's checked config."""

    path: Path
    settings: LoraSettings
    base_model_id: str
    provenance: dict[str, Any]


# ------------------------------------------------------------------------------------------------ writing
def adapter_state_dict(model: nn.Module, adapter_name: str = DEFAULT_ADAPTER_NAME) -> dict[str, torch.Tensor]:
    """The adapter's factors under their file names (`<module>.lora_A.weight`, `<module>.lora_B.weight`), detached
    but sharing memory with the model (copy them to keep a snapshot)."""
    out = {}
    for name, layer in lora_layers(unwrap_model(model)):
        if adapter_name in layer.lora_A:
            out[f"{name}.lora_A.weight"] = layer.lora_A[adapter_name].weight.detach()
            out[f"{name}.lora_B.weight"] = layer.lora_B[adapter_name].weight.detach()
    if not out:
        raise AdapterError(f"the model has no adapter named {adapter_name!r}")
    return out


def load_adapter_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], adapter_name: str = DEFAULT_ADAPTER_NAME
) -> None:
    """Copy factors saved by adapter_state_dict into the model's adapter; keys and shapes must match exactly."""
    own = adapter_state_dict(model, adapter_name)
    missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
    misshaped = sorted(k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape))
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", misshaped)):
        if keys:
            raise AdapterError(f"adapter weights do not match the model: {len(keys)} {label} (first: {keys[0]})")
    with torch.no_grad():
        for key, tensor in own.items():
            tensor.copy_(state_dict[key])


def adapter_config(settings: LoraSettings, base_model_id: str, provenance: Mapping[str, Any] | None) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "rank": settings.rank,
        "alpha": settings.alpha,
        "targets": list(settings.targets),
        "base_model_id": base_model_id,
        "provenance": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version(),
            **(provenance or {}),
        },
    }


def save_adapter_folder(
    model: nn.Module,
    out_dir: str | os.PathLike,
    base_model_id: str,
    provenance: Mapping[str, Any] | None = None,
    *,
    adapter_name: str = DEFAULT_ADAPTER_NAME,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the model's adapter `adapter_name` (its rank, alpha and targets read from the model) as an adapter
    folder recording `base_model_id` (finetune.model_id) and `provenance` (e.g. the training config). Atomic:
    built beside `out_dir`, then swapped in; an existing folder is replaced only if it is an adapter folder.
    `dtype`: storage dtype (float32 when None)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / CONFIG_FILE).is_file())
    ):
        raise AdapterError(f"{out_dir} exists and is not an adapter folder; refusing to overwrite it")
    model = unwrap_model(model)
    tensors = adapter_state_dict(model, adapter_name)
    settings = adapter_settings(model, adapter_name)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        tmp.chmod(0o755)
        write_safetensors(tmp / WEIGHTS_FILE, tensors, dtype or torch.float32)
        atomic_write_json(tmp / CONFIG_FILE, adapter_config(settings, base_model_id, provenance))
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# ------------------------------------------------------------------------------------------------ reading
def read_adapter_config(path: str | os.PathLike) -> AdapterFolder:
    """An adapter folder's config, every field checked (bounded rank and alpha, known targets)."""
    path = Path(path)
    config_file = path / CONFIG_FILE
    if not config_file.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise AdapterError(f"{path} is not an adapter folder (it needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = read_json_object(config_file, MAX_CONFIG_BYTES, AdapterError, "an adapter config")
    version = config.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise AdapterError(f"{config_file} has format_version {version!r}; this code reads {FORMAT_VERSION}")
    if config.get("kind") != KIND:
        raise AdapterError(f"{config_file}: kind {config.get('kind')!r} is not supported (only {KIND!r})")
    base_model_id = config.get("base_model_id")
    if not isinstance(base_model_id, str) or "@" not in base_model_id:
        raise AdapterError(f"{config_file}: base_model_id {base_model_id!r} is not a model id (NAME@HASH)")
    targets = config.get("targets")
    if not isinstance(targets, list):
        raise AdapterError(f"{config_file}: targets must be a list of layer names")
    try:
        settings = LoraSettings(check_rank(config.get("rank")), check_alpha(config.get("alpha")), tuple(targets))
    except AdapterError as exc:
        raise AdapterError(f"{config_file}: {exc}") from None
    provenance = config.get("provenance") if isinstance(config.get("provenance"), dict) else {}
    return AdapterFolder(path, settings, base_model_id, provenance)


def check_base(adapter: AdapterFolder, base_model_id: str) -> None:
    """Refuse an adapter trained on other weights than the model's."""
    if not same_weights(adapter.base_model_id, base_model_id):
        raise AdapterError(
            f"adapter {adapter.path} was trained on model {adapter.base_model_id}, not on {base_model_id}; "
            "apply it to the model it was trained on"
        )


def expected_shapes(model: nn.Module, settings: LoraSettings) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} an adapter with `settings` has on `model`."""
    shapes = {}
    for name in target_module_names(model, settings.targets):
        base = base_layer_of(model.get_submodule(name))
        n_in = base.in_features if isinstance(base, nn.Linear) else base.in_channels
        n_out = base.out_features if isinstance(base, nn.Linear) else base.out_channels
        if isinstance(base, nn.Conv2d):  # peft: A is a conv with the layer's kernel, B a 1x1 conv
            shapes[f"{name}.lora_A.weight"] = (settings.rank, n_in, *base.kernel_size)
            shapes[f"{name}.lora_B.weight"] = (n_out, settings.rank, 1, 1)
        else:
            shapes[f"{name}.lora_A.weight"] = (settings.rank, n_in)
            shapes[f"{name}.lora_B.weight"] = (n_out, settings.rank)
    return shapes


def _header(weights: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} from a safetensors file's header, without reading any tensor."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterError(f"{weights} is not a readable safetensors file: {exc}") from None


def check_weights(adapter: AdapterFolder, model: nn.Module) -> None:
    """Every tensor the adapter's config implies for `model` is in the file with its shape, and nothing else."""
    weights = adapter.path / WEIGHTS_FILE
    expected = expected_shapes(model, adapter.settings)
    if not expected:
        raise AdapterError(
            f"{adapter.path}: none of its targets ({', '.join(adapter.settings.targets)}) is a layer here"
        )
    header = _header(weights)
    problems = [f"missing {k}" for k in expected if k not in header]
    problems += [f"unexpected {k}" for k in header if k not in expected]
    problems += [
        f"{k} is {list(header[k][1])}, the model needs {list(s)}"
        for k, s in expected.items()
        if k in header and header[k][1] != s
    ]
    problems += [f"{k} has dtype {header[k][0]}" for k in header if k in expected and header[k][0] not in FLOAT_DTYPES]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise AdapterError(f"{weights} does not fit this model: {problems[0]}{more}")


def read_adapter(path: str | os.PathLike, model: nn.Module, base_model_id: str) -> tuple[AdapterFolder, dict]:
    """An adapter folder checked against `model` (whose weights have id `base_model_id`), and its tensors."""
    adapter = read_adapter_config(path)
    check_base(adapter, base_model_id)
    check_weights(adapter, unwrap_model(model))
    return adapter, load_file(str(adapter.path / WEIGHTS_FILE))
