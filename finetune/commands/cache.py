"""`python -m finetune cache list|remove`: what the model cache holds, and removing models from it."""

from __future__ import annotations

import argparse

from finetune.hub import HubError, cache_report, cache_root, expand_names, remove_cached_model

from .fetch import CACHE_DIR_HELP

DESCRIPTION = "List the model cache, or remove models from it."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "remove"))
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to remove")
    parser.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        list_cache(args.cache_dir)
        return 0
    if not args.names:
        raise HubError("cache remove needs model names (see `python -m finetune cache list`)")
    for name in expand_names(args.names):
        removed = remove_cached_model(name, args.cache_dir)
        print(f"{name}: {'removed' if removed else 'not in the cache'}")
    return 0


def list_cache(cache_dir: str | None) -> None:
    rows = cache_report(cache_dir)
    print(f"model cache {cache_root(cache_dir)}: {len(rows) or 'nothing'}{' entries' if rows else ''}")
    for name, state, size, path in rows:
        print(f"{name:24} {state:17} {size / 2**20:10.1f} MiB  {path}")
