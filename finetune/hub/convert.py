"""A verified download -> a model folder in the cache.

The checkpoint is memory-mapped (``torch.load(mmap=True, weights_only=True)``) and written tensor by tensor, each
tensor's pages let go once written, so converting a 1.5 GB file never holds a full copy of it in memory. The
output depends only on the downloaded bytes (same download -> same weights, config and model id).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..model import get_preset, resolve_options
from ..model_folder import ModelFolderError, load_openai_checkpoint, write_model_folder
from ..tokenizers import get_tokenizer
from .errors import HubError
from .manifest import check_against_manifest
from .names import released_model


def _preset_label(name: str, options: dict[str, Any]) -> str | None:
    """The name's preset, when the options are exactly that preset's (a mirror may serve other shapes)."""
    preset = released_model(name).preset
    return preset if resolve_options(get_preset(preset)) == options else None


def convert_release(
    name: str, checkpoint: Path, folder: Path, entry: Mapping[str, Any], source: Mapping[str, Any]
) -> Path:
    """Check a downloaded checkpoint against its manifest entry and publish it as the model folder `folder`."""
    what = f"the download of {name} ({checkpoint})"
    try:
        state_dict = load_openai_checkpoint(checkpoint, mmap=True)
    except (ModelFolderError, FileNotFoundError) as exc:
        raise HubError(f"{what}: {exc}") from None
    check_against_manifest(state_dict, entry, what)
    options = resolve_options(entry["options"])
    tokenizer = get_tokenizer(options["tokenizer"], options["text_ctx"])
    provenance = {
        "init_checkpoint": source.get("url"),
        "init_checkpoint_sha256": source.get("sha256"),
        "init_checkpoint_bytes": source.get("size"),
        "converted_from": "openai-glide",
        "release_name": name,
    }
    return write_model_folder(
        folder,
        state_dict,
        options,
        tokenizer=tokenizer,
        provenance=provenance,
        preset=_preset_label(name, options),
        stream=True,
    )
