"""OpenAI GLIDE .pt checkpoint (a file, or a released model's name) -> our model folder
(`python -m finetune convert`)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from data_pipeline.fsutil import file_sha256

from .model import build_model, get_preset, list_presets, resolve_options
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


def add_vocab_argument(parser) -> None:
    """The one flag that overrides a tokenizer's vocabulary files (`--vocab` is accepted too)."""
    parser.add_argument(
        "--vocab-path",
        "--vocab",
        dest="vocab_path",
        default=None,
        metavar="DIR",
        help="GPT-2 BPE folder (encoder.json + vocab.bpe, gzipped or not, or a Hugging Face GPT-2 "
        "tokenizer) overriding the one shipped with the package",
    )


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of the `convert` command; pair with `run_convert(args)`."""
    from .hub.names import RELEASED_MODELS

    names = ", ".join(RELEASED_MODELS)
    parser.add_argument(
        "checkpoint",
        help="OpenAI GLIDE .pt file (base.pt, upsample.pt, base_inpaint.pt, "
        f"upsample_inpaint.pt) or a released model's name ({names}), fetched "
        "into the cache first",
    )
    parser.add_argument(
        "--preset",
        default=None,
        choices=list_presets(),
        help="architecture the .pt file was trained with (required for a file; a name implies it)",
    )
    parser.add_argument("--out", required=True, help="model folder to write")
    add_vocab_argument(parser)
    parser.add_argument("--fp16", action="store_true", help="store float16 weights (half the size)")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="model cache folder for names (default: $AUTOCOMICS_CACHE or ~/.cache/autocomics)",
    )
    return parser


def run_convert(args: argparse.Namespace) -> Path:
    from .hub import ensure_model, is_model_name, is_pipeline_name, released_model

    if is_pipeline_name(args.checkpoint) and not Path(args.checkpoint).exists():
        released_model(args.checkpoint)  # says it is a pipeline and names its single models
    if is_model_name(args.checkpoint) and not Path(args.checkpoint).exists():
        implied = released_model(args.checkpoint).preset
        if args.preset and args.preset != implied:
            raise ValueError(f"{args.checkpoint} has preset {implied}, not {args.preset}")
        cached = ensure_model(args.checkpoint, args.cache_dir)
        out = copy_model_folder(cached, args.out, vocab_path=args.vocab_path, fp16=args.fp16)
    else:
        if not args.preset:
            raise ValueError(
                f"--preset is required to convert the file {args.checkpoint} (one of {', '.join(list_presets())})"
            )
        out = convert(args.checkpoint, args.preset, args.out, vocab_path=args.vocab_path, fp16=args.fp16)
    print(f"wrote model folder {out}")
    return out
