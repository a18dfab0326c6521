"""`python -m finetune train ...` (also `accelerate launch -m finetune train ...`) and `python -m finetune convert ...`."""
from __future__ import annotations

import argparse
import os
import sys

from data_pipeline.oserrors import describe_os_error

# Idle OpenMP threads sleep instead of spinning (set before torch loads). On a CPU shared with other work, spinning
# threads measured up to 8x slower training steps; on an idle machine the difference is small.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _train(args: argparse.Namespace) -> int:
    from finetune.train import USER_ERRORS, train
    from finetune.train.config import config_from_args

    try:
        config = config_from_args(args)
        result = train(config)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.interrupted:
        return 128 + (result.signal or 0)
    if result.model_dir is not None and result.is_main:
        print(f"done: {result.step} steps; model folder {result.model_dir}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from finetune.checkpoints import CheckpointError
    from finetune.convert import run_convert

    try:
        run_convert(args)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    from finetune.convert import add_convert_arguments
    from finetune.train.config import add_arguments

    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser = sub.add_parser(
        "train", help="fine-tune or train a GLIDE base / upsampler / inpainting model",
        description="Train with Accelerate (one CPU, one GPU, or many with `accelerate launch -m finetune train`). "
                    "Settings come from --config (YAML/TOML) and flags; flags win. The resolved settings, checkpoints, "
                    "TensorBoard logs, sample grids and the final model folder go to --run-dir.")
    add_arguments(train_parser)
    train_parser.set_defaults(func=_train)
    convert_parser = sub.add_parser("convert", help="OpenAI GLIDE .pt -> model folder",
                                    description="Convert an OpenAI GLIDE checkpoint into a model folder.")
    add_convert_arguments(convert_parser)
    convert_parser.set_defaults(func=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OSError as exc:  # a full or read-only disk, --out naming a file, ...: writes are atomic, nothing is lost
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
