"""Finding and loading the models a sampling command needs.

A model argument may be a name (`bundled`; OpenAI's released `glide-base`, `glide-upsample`, `glide-base-inpaint`,
`glide-upsample-inpaint`, fetched into the model cache on first use; the pipelines `glide` and `glide-inpaint`), a
model folder (config.json + weights), a pipeline folder (base/ and upsampler/ model folders), or an OpenAI GLIDE
`.pt` file (read through the model core with a preset). An existing path wins over a name. With no model argument
the bundled models are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from data_pipeline.errors import UserError
from finetune import bundled_models  # the module, not its function: tests stand in a missing bundle on it
from finetune.hub import PIPELINES, HubError, all_names, ensure_model, is_model_name, is_pipeline_name
from finetune.model import build_model, get_preset
from finetune.model_folder import check_state_dict, load_model_folder, load_openai_checkpoint
from finetune.model_id import checkpoint_model_id, folder_model_id
from finetune.tokenizers import get_tokenizer

DEFAULT_OPENAI_PRESETS = {"base": "glide-base", "upsampler": "glide-upsample"}
BUNDLED_NAME = "bundled"


class ModelLoadError(UserError, ValueError):
    """A model argument that does not name a usable model."""


@dataclass
class SamplingModel:
    """A model ready for sampling: eval mode, on its device, with its tokenizer and a stable id."""

    model: torch.nn.Module
    options: dict[str, Any]
    tokenizer: Any
    model_id: str  # of the weights as loaded; adapters applied since are listed in `adapters`
    source: str
    adapters: list[dict] = field(default_factory=list)  # metadata of the applied adapters (sampling.adapters)

    @property
    def image_size(self) -> int:
        return int(self.options["image_size"])

    @property
    def text_ctx(self) -> int:
        return int(self.options["text_ctx"])

    @property
    def is_upsampler(self) -> bool:
        return bool(self.options.get("super_res"))

    @property
    def is_inpainting(self) -> bool:
        return bool(self.options.get("inpaint"))


@dataclass
class ModelPair:
    base: SamplingModel
    upsampler: SamplingModel | None


def is_pipeline_folder(path: Path) -> bool:
    return (
        path.is_dir() and (path / "base" / "config.json").is_file() and (path / "upsampler" / "config.json").is_file()
    )


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _describe_expected() -> str:
    return (
        f"expected a model name ({', '.join([BUNDLED_NAME, *all_names()])}), a model folder (with config.json), "
        "a pipeline folder (with base/ and upsampler/), or an OpenAI GLIDE .pt checkpoint"
    )


def _load_folder(path: Path, device: torch.device, use_ema: bool) -> SamplingModel:
    try:
        loaded = load_model_folder(path, device=device, dtype=None, use_ema=use_ema)
    except (KeyError, ValueError, OSError, RuntimeError, SafetensorError) as exc:
        raise ModelLoadError(f"{path}: could not load the model folder: {exc}") from None
    loaded.model.eval().requires_grad_(False)
    return SamplingModel(
        loaded.model, dict(loaded.options), loaded.tokenizer, folder_model_id(path, use_ema), str(path)
    )


def _load_openai(path: Path, preset: str, vocab: str | None, device: torch.device) -> SamplingModel:
    try:
        options = get_preset(preset)
    except KeyError as exc:
        raise ModelLoadError(str(exc.args[0])) from None
    try:
        state_dict = load_openai_checkpoint(path)
        with torch.device("meta"):
            model = build_model(options)
        check_state_dict(model, state_dict, what=f"{path} (preset {preset}; pass the right --preset)")
    except (ValueError, OSError) as exc:
        raise ModelLoadError(str(exc)) from None
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    try:
        tokenizer = get_tokenizer(options["tokenizer"], int(options["text_ctx"]), vocab_path=vocab)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(
            f"{path}: cannot load the {options['tokenizer']} tokenizer's vocabulary ({vocab or 'shipped files'}): {exc}"
        ) from None
    return SamplingModel(model, dict(model.options), tokenizer, checkpoint_model_id(path, preset), str(path))


def load_sampling_model(
    path: str | os.PathLike,
    role: str,
    device: torch.device,
    *,
    preset: str | None = None,
    vocab: str | None = None,
    use_ema: bool = True,
) -> SamplingModel:
    """Load one model folder or OpenAI .pt file for `role` ('base' or 'upsampler') and check it fits the role."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or folder; {_describe_expected()}")
    if is_model_folder(path):
        loaded = _load_folder(path, device, use_ema)
    elif path.is_file() and path.suffix == ".pt":
        loaded = _load_openai(path, preset or DEFAULT_OPENAI_PRESETS[role], vocab, device)
    elif is_pipeline_folder(path):
        raise ModelLoadError(f"{path} is a pipeline folder; pass {path / role} for the {role} alone")
    else:
        raise ModelLoadError(f"{path} is not a model: {_describe_expected()}")
    if role == "upsampler" and not loaded.is_upsampler:
        raise ModelLoadError(f"{path} is a base model, not an upsampler (its options have super_res false)")
    if role == "base" and loaded.is_upsampler:
        raise ModelLoadError(f"{path} is an upsampler; give a base model (or a pipeline folder) as the model")
    return loaded


def _bundled_path(role: str) -> Path:
    try:
        path = Path(bundled_models.bundled_model_path(role))
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"no --model given and the bundled {role} model is not available: {exc}") from None
    if not path.exists():
        raise ModelLoadError(f"no model was given and the bundled {role} model is missing at {path}; pass --model PATH")
    return path


def _named(text: str) -> bool:
    """A model or pipeline name rather than a path (an existing file or folder of that name wins)."""
    return (text == BUNDLED_NAME or is_model_name(text) or is_pipeline_name(text)) and not Path(text).exists()


def _released_path(name: str) -> Path:
    try:
        return ensure_model(name)
    except HubError as exc:
        raise ModelLoadError(f"{name}: {exc}") from None


def _resolve_named(name: str, role: str) -> tuple[Path, str | None]:
    """(model folder for `role`, the upsampler name it brings or None) of a name."""
    if name == BUNDLED_NAME:
        return _bundled_path(role), (BUNDLED_NAME if role == "base" else None)
    if name in PIPELINES:
        base, up = PIPELINES[name]
        return _released_path(base if role == "base" else up), (up if role == "base" else None)
    return _released_path(name), None


def _resolve_upsampler(upsampler: str) -> Path:
    return _resolve_named(upsampler, "upsampler")[0] if _named(upsampler) else Path(upsampler).expanduser()


def load_models(
    model: str | None,
    device: torch.device,
    *,
    upsampler: str | None = None,
    use_upsampler: bool = True,
    preset: str | None = None,
    upsampler_preset: str | None = None,
    vocab: str | None = None,
    use_ema: bool = True,
) -> ModelPair:
    """Resolve the base (and optional upsampler) a command samples with.

    `model` may be a pipeline folder or pipeline name (`glide`, `bundled`), which brings its own upsampler unless
    `upsampler` names another or `use_upsampler` is false; None means the bundled base and upsampler. Released
    models are fetched only when used (no upsampler download with `use_upsampler` false).
    """
    brought: Path | str | None = None  # the upsampler the model brings: a folder, or a name resolved when needed
    if model is None or _named(str(model)):
        base_path, brought = _resolve_named(str(model or BUNDLED_NAME), "base")
    else:
        base_path = Path(model).expanduser()
        if is_pipeline_folder(base_path):
            brought = base_path / "upsampler"
            base_path = base_path / "base"
    upsampler_path: Path | None = None
    if use_upsampler:
        chosen = upsampler or brought
        if chosen == BUNDLED_NAME and not upsampler:
            upsampler_path = _bundled_path("upsampler")  # the bundled base's own, whatever the folder holds
        elif isinstance(chosen, str):
            upsampler_path = _resolve_upsampler(chosen)
        else:
            upsampler_path = chosen
    base = load_sampling_model(base_path, "base", device, preset=preset, vocab=vocab, use_ema=use_ema)
    up = None
    if upsampler_path is not None:
        # Each model encodes the caption with its own tokenizer, so the two need not share one.
        up = load_sampling_model(
            upsampler_path, "upsampler", device, preset=upsampler_preset, vocab=vocab, use_ema=use_ema
        )
    return ModelPair(base, up)
