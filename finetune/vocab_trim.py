"""Trim a model folder's vocabulary to the tokens its captions use.

A model trained from scratch on a narrow world (the bundled ones) uses a few hundred of the tokenizer's ~50k
tokens; the rest of its token embedding is untrained initial noise, and for the bundled 32 px base it is half the
weights file. Trimming keeps the rows of the tokens that the given captions produce (plus the padding token) in
tokenizer-id order, adds one zero row that every other token reads (the unknown token), records the kept ids in
kept_tokens.json beside the vocabulary files and sets the `token_rows` option. Captions made only of kept tokens
give exactly the outputs of the untrimmed model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file

from .model_folder import EMA_FILE, WEIGHTS_FILE, ModelFolderError, read_config, write_model_folder
from .tokenizers import Tokenizer, get_tokenizer

TOKEN_EMBEDDING = "token_embedding.weight"
STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def used_token_ids(tokenizer: Tokenizer, captions: Iterable[str]) -> list[int]:
    """The sorted ids (of the full vocabulary) that the captions produce, and the padding token."""
    used = {type(tokenizer).pad_token}
    for caption in captions:
        used.update(tokenizer.ids(caption)[0])
    return sorted(used)


def trimmed_embedding(weight: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """The kept rows in order, then a zero row for every other token."""
    return torch.cat([weight[kept], torch.zeros_like(weight[:1])])


def trim_vocabulary(tokenizer: Tokenizer, captions: Iterable[str], state_dicts: Iterable[dict]) -> dict:
    """Trim in place: the tokenizer to the tokens of `captions`, each state dict's token embedding to their rows.
    Returns what a model folder's provenance records of it (kept tokens, of how many)."""
    kept = used_token_ids(tokenizer, captions)
    for state in state_dicts:
        if TOKEN_EMBEDDING not in state:
            raise ModelFolderError(f"the weights have no {TOKEN_EMBEDDING} (a model without a text side?)")
        state[TOKEN_EMBEDDING] = trimmed_embedding(state[TOKEN_EMBEDDING], kept)
    tokenizer.keep_only(kept)
    return {"kept_tokens": len(kept), "of": type(tokenizer).vocab_size}


def trim_model_folder(source: str | os.PathLike, captions: Iterable[str], out: str | os.PathLike) -> dict:
    """Write a copy of the model folder `source` at `out` whose vocabulary keeps only the tokens of `captions`;
    returns {kept, rows_before, bytes_before, bytes_after}."""
    source, out = Path(source), Path(out)
    config = read_config(source)
    options = dict(config["options"])
    if options.get("token_rows"):
        raise ModelFolderError(f"{source}: its vocabulary is trimmed already ({options['token_rows']} rows)")
    if not config.get("tokenizer_files"):
        raise ModelFolderError(f"{source}: the folder holds no vocabulary files to trim")
    if not (source / WEIGHTS_FILE).is_file():
        raise ModelFolderError(f"{source}: no {WEIGHTS_FILE}")
    tokenizer = get_tokenizer(options["tokenizer"], options["text_ctx"], source)
    states = {name: load_file(str(source / name)) for name in (WEIGHTS_FILE, EMA_FILE) if (source / name).is_file()}
    trimmed = trim_vocabulary(tokenizer, captions, states.values())
    options["token_rows"] = tokenizer.vocab_size
    provenance_file = source / "provenance.json"
    provenance = {}
    if provenance_file.is_file():
        provenance = json.loads(provenance_file.read_text(encoding="utf-8"))
        provenance = {k: v for k, v in provenance.items() if k not in ("created", "code_version")}
    provenance["vocabulary_trimmed"] = {**trimmed, "from": str(source)}
    dtype = STORAGE_DTYPES.get(config.get("storage_dtype") or "float32")
    write_model_folder(
        out,
        states[WEIGHTS_FILE],
        options,
        tokenizer,
        ema_state_dict=states.get(EMA_FILE),
        provenance=provenance,
        preset=config.get("preset"),
        dtype=dtype,
    )
    return {
        "kept": trimmed["kept_tokens"],
        "rows_before": trimmed["of"],
        "bytes_before": folder_bytes(source),
        "bytes_after": folder_bytes(out),
    }


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
