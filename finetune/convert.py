"""OpenAI GLIDE .pt checkpoint -> our model folder, and copies of model folders (the command line is
`python -m finetune convert`, in `finetune/commands/convert.py`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from data_pipeline.fsutil import file_sha256

from .model import build_model, get_preset, resolve_options
from .model_folder import (
    EMA_FILE,
    PROVENANCE_FILE,
    WEIGHTS_FILE,
    check_state_dict,
    load_openai_checkpoint,
    read_config,
    write_model_folder,
)
from .tokenizers import get_tokenizer


def convert(
    pt_path: str | os.PathLike,
    preset: str,
    out_dir: str | os.PathLike,
    vocab_path: str | os.PathLike | None = None,
    fp16: bool = False,
) -> Path:
    """Check an OpenAI checkpoint against `preset` (keys and shapes, strictly) and write a model folder.

    The tokenizer's vocabulary files are copied in (from `vocab_path`, or the ones the package ships), so the
    folder is self-contained. `fp16` stores half-precision weights.
    """
    options = get_preset(preset)
    state_dict = load_openai_checkpoint(pt_path, mmap=True)
    with torch.device("meta"):
        reference = build_model(options)
    check_state_dict(reference, state_dict, what=f"{pt_path} (preset {preset})")
    tokenizer = get_tokenizer(options["tokenizer"], options["text_ctx"], vocab_path)
    provenance = {
        "init_checkpoint": str(Path(pt_path).resolve()),
        "init_checkpoint_sha256": file_sha256(Path(pt_path)),
        "converted_from": "openai-glide",
        "preset": preset,
    }
    return write_model_folder(
        out_dir,
        state_dict,
        options,
        tokenizer=tokenizer,
        provenance=provenance,
        preset=preset,
        dtype=torch.float16 if fp16 else None,
        stream=True,  # the checkpoint is memory-mapped: let go of each tensor's pages once written
    )


def copy_model_folder(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    vocab_path: str | os.PathLike | None = None,
    fp16: bool = False,
) -> Path:
    """Write a copy of a model folder (e.g. a cached released model), optionally in fp16 or with another
    vocabulary copy."""
    source = Path(source)
    config = read_config(source)
    options = resolve_options(config["options"])
    tokenizer = get_tokenizer(options["tokenizer"], options["text_ctx"], vocab_path or source)
    ema = load_file(source / EMA_FILE) if (source / EMA_FILE).is_file() else None
    provenance = json.loads((source / PROVENANCE_FILE).read_text()) if (source / PROVENANCE_FILE).is_file() else {}
    provenance.pop("created", None)
    provenance.pop("code_version", None)
    return write_model_folder(
        out_dir,
        load_file(source / WEIGHTS_FILE),
        options,
        tokenizer=tokenizer,
        ema_state_dict=ema,
        provenance={**provenance, "copied_from": str(source)},
        preset=config.get("preset"),
        dtype=torch.float16 if fp16 else None,
    )
