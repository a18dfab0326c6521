"""`python -m finetune adapter merge MODEL ADAPTER[:SCALE]... --out DIR`: bake LoRA adapters into a model folder;
`python -m finetune adapter teach --name NAME --images DIR --out DIR`: teach a new character (finetune.adapters.teach).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

<<<<<<< HEAD
from finetune.bundled_models import BUNDLED_PIPELINES, bundled_model_path
from finetune.hub import HubError, ensure_model, is_model_name, is_pipeline_name

=======
from . import teach
>>>>>>> adapt-cast
from .apply import merge_adapters
from .model_names import resolve_model_folder
from .specs import adapter_spec_argument

DESCRIPTION = (
    "Work with LoRA adapters. `merge` writes a new model folder with adapters baked into the weights at their "
    "scales (ADAPTER:0.5 applies half of one); the merged model samples like the base with the adapters applied, "
    "at no extra cost per image."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="adapter_action", metavar="ACTION", required=True)
    merge = actions.add_parser("merge", help="bake adapters into a new model folder", description=DESCRIPTION)
    merge.add_argument("model", help="base model folder, or a model name (bundled, glide-base, glide-upsample, ...)")
    merge.add_argument(
        "adapters",
        nargs="+",
        type=adapter_spec_argument,
        metavar="ADAPTER[:SCALE]",
        help="adapter folder, optionally with its scale (default 1)",
    )
    merge.add_argument("--out", required=True, type=Path, metavar="DIR", help="the merged model folder to write")
    merge.add_argument("--no-ema", action="store_true", help="merge into the raw weights, not the EMA ones")
    merge.add_argument("--fp16", action="store_true", help="store the merged weights in float16 (half the size)")
<<<<<<< HEAD


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
        raise AdapterError(f"{text} is a pipeline (a base and an upsampler); name the one model to merge into")
    if is_model_name(text):
        try:
            return ensure_model(text)
        except HubError as exc:
            raise AdapterError(f"{text}: {exc}") from None
    raise AdapterError(f"{text}: no such model folder or model name")
=======
    teach.add_arguments(
        actions.add_parser(
            "teach", help="teach the model a new character from a few images", description=teach.DESCRIPTION
        )
    )
>>>>>>> adapt-cast


def run(args: argparse.Namespace) -> int:
    if args.adapter_action == "teach":
        return teach.run(args)
    out = merge_adapters(
        resolve_model_folder(args.model),
        args.adapters,
        args.out,
        use_ema=not args.no_ema,
        dtype=torch.float16 if args.fp16 else None,
    )
    print(f"merged {len(args.adapters)} adapter(s) into {out}")
    return 0
