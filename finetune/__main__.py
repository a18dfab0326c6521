"""`python -m finetune train ...` (also `accelerate launch -m finetune train ...`), `convert`, `fetch` and `cache`."""

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
    from finetune.convert import run_convert
    from finetune.model_folder import ModelFolderError

    try:
        run_convert(args)
    except (ModelFolderError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from finetune.hub import HubError, expand_names, fetch_model

    try:
        names = expand_names(args.names)
        for name in names:
            result = fetch_model(name, args.cache_dir, progress=False if args.quiet else None)
            print(f"{name}: {'fetched into' if result.downloaded else 'already in'} {result.path}")
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cache(args: argparse.Namespace) -> int:
    from finetune.hub import HubError, cache_report, cache_root, expand_names, remove_cached_model

    try:
        if args.action == "list":
            rows = cache_report(args.cache_dir)
            print(f"model cache {cache_root(args.cache_dir)}: {len(rows) or 'nothing'}{' entries' if rows else ''}")
            for name, state, size, path in rows:
                print(f"{name:24} {state:17} {size / 2**20:10.1f} MiB  {path}")
            return 0
        if not args.names:
            raise HubError("cache remove needs model names (see `python -m finetune cache list`)")
        for name in expand_names(args.names):
            removed = remove_cached_model(name, args.cache_dir)
            print(f"{name}: {'removed' if removed else 'not in the cache'}")
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_hub_parsers(sub) -> None:
    from finetune.hub import CACHE_ENV, OFFLINE_ENV, URL_ENV, all_names

    cache_help = f"model cache folder (default: ${CACHE_ENV}, else ~/.cache/autocomics)"
    fetch_parser = sub.add_parser(
        "fetch",
        help="download OpenAI's released GLIDE weights by name into the model cache",
        description=f"Download, verify and convert released models into the cache ({', '.join(all_names())}); "
        f"commands that take a model fetch a name on first use too. ${URL_ENV} points at a mirror; "
        f"{OFFLINE_ENV}=1 forbids the network. An interrupted download resumes on the next run.",
    )
    fetch_parser.add_argument("names", nargs="+", metavar="NAME", help="model or pipeline names")
    fetch_parser.add_argument("--cache-dir", default=None, help=cache_help)
    fetch_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch_parser.set_defaults(func=_fetch)
    cache_parser = sub.add_parser(
        "cache", help="list or remove cached models", description="List the model cache, or remove models from it."
    )
    cache_parser.add_argument("action", choices=("list", "remove"))
    cache_parser.add_argument("names", nargs="*", metavar="NAME", help="models to remove")
    cache_parser.add_argument("--cache-dir", default=None, help=cache_help)
    cache_parser.set_defaults(func=_cache)


def build_parser() -> argparse.ArgumentParser:
    from finetune.convert import add_convert_arguments
    from finetune.train.config import add_arguments

    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser = sub.add_parser(
        "train",
        help="fine-tune or train a GLIDE base / upsampler / inpainting model",
        description="Train with Accelerate (one CPU, one GPU, or many with `accelerate launch -m finetune train`). "
        "Settings come from --config (YAML/TOML) and flags; flags win. The resolved settings, checkpoints, "
        "TensorBoard logs, sample grids and the final model folder go to --run-dir.",
    )
    add_arguments(train_parser)
    train_parser.set_defaults(func=_train)
    convert_parser = sub.add_parser(
        "convert",
        help="OpenAI GLIDE .pt -> model folder",
        description="Convert an OpenAI GLIDE checkpoint into a model folder.",
    )
    add_convert_arguments(convert_parser)
    convert_parser.set_defaults(func=_convert)
    _add_hub_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted (an unfinished download is kept and resumes next time)", file=sys.stderr)
        return 130
    except OSError as exc:  # a full or read-only disk, --out naming a file, ...: writes are atomic, nothing is lost
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
