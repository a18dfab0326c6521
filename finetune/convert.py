"""OpenAI GLIDE .pt checkpoint -> our model folder (`python -m finetune convert`)."""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import torch

from .checkpoints import check_state_dict, load_openai_checkpoint, write_model_folder
from .model import build_model, get_preset, list_presets
from .tokenizers import get_tokenizer


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert(
    pt_path: str | os.PathLike,
    preset: str,
    out_dir: str | os.PathLike,
    vocab_path: str | os.PathLike | None = None,
    fp16: bool = False,
) -> Path:
    """Check an OpenAI checkpoint against `preset` (keys and shapes, strictly) and write a model folder.

    The GPT-2 vocabulary is copied in when `vocab_path` is given (otherwise the folder needs
    `vocab_path` when loaded). `fp16` stores half-precision weights.
    """
    options = get_preset(preset)
    state_dict = load_openai_checkpoint(pt_path)
    with torch.device("meta"):
        reference = build_model(options)
    check_state_dict(reference, state_dict, what=f"{pt_path} (preset {preset})")
    tokenizer = None
    if vocab_path is not None or options["tokenizer"] != "gpt2":
        tokenizer = get_tokenizer(options["tokenizer"], options["text_ctx"], vocab_path)
    provenance = {
        "init_checkpoint": str(Path(pt_path).resolve()),
        "init_checkpoint_sha256": _sha256(Path(pt_path)),
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
    )


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of the `convert` command; pair with `run_convert(args)`."""
    parser.add_argument("checkpoint", help="OpenAI GLIDE .pt file (base.pt, upsample.pt, base_inpaint.pt, upsample_inpaint.pt)")
    parser.add_argument("--preset", required=True, choices=list_presets(), help="architecture the checkpoint was trained with")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--vocab", default=None, help="GPT-2 BPE directory (encoder.json/vocab.bpe, or a Hugging Face GPT-2 tokenizer) to copy in")
    parser.add_argument("--fp16", action="store_true", help="store float16 weights (half the size)")
    return parser


def run_convert(args: argparse.Namespace) -> Path:
    out = convert(args.checkpoint, args.preset, args.out, vocab_path=args.vocab, fp16=args.fp16)
    print(f"wrote model folder {out}")
    return out
