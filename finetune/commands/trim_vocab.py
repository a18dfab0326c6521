"""`python -m finetune trim-vocab MODEL --out DIR (--captions FILE | --dataset DIR)...`: a copy of a model folder
whose vocabulary keeps only the tokens its captions use (finetune.vocab_trim)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from data_pipeline.errors import UserError

DESCRIPTION = (
    "Copy a model folder with its vocabulary trimmed to the tokens of the given captions: the token embedding keeps "
    "those rows (and one unknown-token row for every other token), so a model trained on a narrow world ships at "
    "a fraction of the size; captions made of kept tokens give exactly the same images."
)
MAX_CAPTION_FILE_BYTES = 256 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="model folder to trim")
    parser.add_argument("--out", required=True, type=Path, help="the trimmed model folder to write")
    parser.add_argument(
        "--captions",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="text file, one caption per line (repeatable)",
    )
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="DIR",
        help="dataset whose captions (every caption of every sample, both splits) count (repeatable)",
    )


def file_captions(path: Path) -> Iterator[str]:
    if not path.is_file():
        raise UserError(f"--captions {path}: not a file")
    if path.stat().st_size > MAX_CAPTION_FILE_BYTES:
        raise UserError(f"--captions {path}: larger than {MAX_CAPTION_FILE_BYTES >> 20} MiB")
    with open(path, encoding="utf-8", errors="replace") as fh:
        yield from (line.strip() for line in fh if line.strip())


def dataset_captions(entry: str) -> Iterator[str]:
    """Every caption of every sample of a dataset (of its smallest image size: each size holds the same captions)."""
    from finetune.train.dataset_discovery import resolve_dataset

    for shard in resolve_dataset([entry], image_size=1).shards:
        for record in shard.records():
            yield from record.captions


def run(args: argparse.Namespace) -> int:
    from finetune.vocab_trim import trim_model_folder

    if not args.captions and not args.dataset:
        raise UserError("give the captions the model must keep: --captions FILE and/or --dataset DIR")
    if args.out.resolve() == args.model.resolve():
        raise UserError("--out must be a new folder, not the model itself")

    def captions() -> Iterator[str]:
        for path in args.captions:
            yield from file_captions(path)
        for entry in args.dataset:
            yield from dataset_captions(entry)

    try:
        report = trim_model_folder(args.model, captions(), args.out)
    except (OSError, ValueError) as exc:
        raise UserError(f"trim-vocab: {exc}") from None
    print(
        f"kept {report['kept']} of {report['rows_before']} tokens: {args.out} "
        f"({report['bytes_before'] / 1e6:.1f} MB -> {report['bytes_after'] / 1e6:.1f} MB)"
    )
    return 0
