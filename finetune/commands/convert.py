"""`python -m finetune convert`: an OpenAI GLIDE .pt file, or a released model's name -> a model folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_pipeline.errors import UserError
from finetune.convert import convert, copy_model_folder
from finetune.hub import RELEASED_MODELS, ensure_model, is_model_name, is_pipeline_name, released_model
from finetune.model import list_presets

from .fetch import INTERRUPTED

DESCRIPTION = "Convert an OpenAI GLIDE checkpoint into a model folder."


def run(args: argparse.Namespace) -> int:
    try:
        convert_from_args(args)
    except UserError:
        raise
    except (FileNotFoundError, FileExistsError, ValueError) as exc:  # a missing .pt or an --out that exists: exit 2
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return 0


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def convert_from_args(args: argparse.Namespace) -> Path:
    """A released model's name (fetched, then copied) or an OpenAI `.pt` file -> the model folder `args.out`."""
    if is_pipeline_name(args.checkpoint) and not Path(args.checkpoint).exists():
        released_model(args.checkpoint)  # says it is a pipeline and names its single models
    if is_model_name(args.checkpoint) and not Path(args.checkpoint).exists():
        implied = released_model(args.checkpoint).preset
        if args.preset and args.preset != implied:
            raise UserError(f"{args.checkpoint} has preset {implied}, not {args.preset}")
        cached = ensure_model(args.checkpoint, args.cache_dir)
        out = copy_model_folder(cached, args.out, vocab_path=args.vocab_path, fp16=args.fp16)
    else:
        if not args.preset:
            raise UserError(
                f"--preset is required to convert the file {args.checkpoint} (one of {', '.join(list_presets())})"
            )
        out = convert(args.checkpoint, args.preset, args.out, vocab_path=args.vocab_path, fp16=args.fp16)
    print(f"wrote model folder {out}")
    return out
