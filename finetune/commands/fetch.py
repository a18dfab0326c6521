"""`python -m finetune fetch NAME...`: OpenAI's released GLIDE weights by name, into the model cache."""

from __future__ import annotations

import argparse
import sys

from finetune.hub import CACHE_ENV, OFFLINE_ENV, URL_ENV, all_names, expand_names, fetch_model

DESCRIPTION = (
    f"Download, verify and convert released models into the cache ({', '.join(all_names())}); "
    f"commands that take a model fetch a name on first use too. ${URL_ENV} points at a mirror; "
    f"{OFFLINE_ENV}=1 forbids the network. An interrupted download resumes on the next run."
)
CACHE_DIR_HELP = f"model cache folder (default: ${CACHE_ENV}, else ~/.cache/autocomics)"
INTERRUPTED = "interrupted (an unfinished download is kept and resumes next time)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME", help="model or pipeline names")
    parser.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        for name in expand_names(args.names):
            result = fetch_model(name, args.cache_dir, progress=False if args.quiet else None)
            print(f"{name}: {'fetched into' if result.downloaded else 'already in'} {result.path}")
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return 0
