"""`python -m finetune adapter merge MODEL ADAPTER[:SCALE]... --out DIR`: bake LoRA adapters into a model folder;
`python -m finetune adapter teach --name NAME --images DIR --out DIR`: teach a new character (finetune.adapters.teach).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import teach
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
    teach.add_arguments(
        actions.add_parser(
            "teach", help="teach the model a new character from a few images", description=teach.DESCRIPTION
        )
    )


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
