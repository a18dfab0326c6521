"""A model argument of the adapter commands: a model folder, or a model name that stands for one."""

from __future__ import annotations

from pathlib import Path

from finetune.bundled_models import BUNDLED_PIPELINES, bundled_model_path
from finetune.hub import HubError, ensure_model, is_model_name, is_pipeline_name

from .errors import AdapterError


def resolve_model_folder(text: str) -> Path:
    """A model folder, or the folder a model name stands for (`bundled`, `bundled-emoji`: their bundled bases)."""
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise AdapterError(
                f"{path} is not a model folder (no config.json); give the model the adapters were trained on"
            )
        return path
    if text in BUNDLED_PIPELINES:
        try:
            return bundled_model_path("base", text)
        except FileNotFoundError as exc:
            raise AdapterError(str(exc)) from None
    if is_pipeline_name(text):
        raise AdapterError(f"{text} is a pipeline (a base and an upsampler); name the one model to use")
    if is_model_name(text):
        try:
            return ensure_model(text)
        except HubError as exc:
            raise AdapterError(f"{text}: {exc}") from None
    raise AdapterError(f"{text}: no such model folder or model name")
