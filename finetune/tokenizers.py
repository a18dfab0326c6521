"""Caption tokenizers behind one interface: ``encode(captions) -> (tokens, mask)`` padded to text_ctx.

- ``clip``: CLIP's BPE (open_clip ships the vocabulary), with start/end tokens; the default for new models.
- ``gpt2``: GPT-2's BPE on lowercased text, padded with the end token 50256; what OpenAI's GLIDE
  checkpoints were trained with. GPT-2's vocabulary files (MIT) ship with the package; a path overrides them.

The empty caption (all padding, mask all False) is the unconditional input for classifier-free
guidance; ``empty(n)`` returns it and every tokenizer encodes "" to exactly that (CLIP also
whitespace-only captions; GPT-2 keeps the reference's ids for whitespace).
"""

from __future__ import annotations

import gzip
import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Sequence

import regex
import torch

from data_pipeline.fsutil import atomic_write_bytes

GPT2_VOCAB_SIZE = 50257
GPT2_END_TOKEN = 50256
CLIP_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
KEPT_TOKENS_FILE = "kept_tokens.json"  # a trimmed vocabulary's kept ids, beside the vocabulary files
MAX_KEPT_TOKENS_BYTES = 1 << 20
GPT2_FILES = ("encoder.json.gz", "vocab.bpe.gz")
PACKAGED_GPT2_DIR = ("tokenizer_files", "gpt2")  # under the finetune package: GPT-2's encoder.json and vocab.bpe

_GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class KeptTokens:
    """A trimmed vocabulary: the tokenizer ids a model keeps token embedding rows for, in row order; every other id
    reads the last row, the unknown token's."""

    def __init__(self, ids: Sequence[int], full_size: int, pad_token: int):
        if not isinstance(ids, (list, tuple)) or not all(type(i) is int and 0 <= i < full_size for i in ids):
            raise ValueError(f"kept token ids must be a list of integers in [0, {full_size})")
        if len(set(ids)) != len(ids) or not 1 <= len(ids) < full_size:
            raise ValueError(f"kept token ids must be 1 to {full_size - 1} distinct ids")
        if pad_token not in ids:
            raise ValueError(f"kept token ids must include the padding token {pad_token}")
        self.ids = tuple(ids)
        self.unknown_row = len(ids)
        self._rows = {token: row for row, token in enumerate(ids)}

    @property
    def rows(self) -> int:
        return len(self.ids) + 1

    def map(self, ids: Sequence[int]) -> list[int]:
        return [self._rows.get(i, self.unknown_row) for i in ids]


def read_kept_tokens(path: Path, name: str) -> list[int]:
    """The kept ids a vocabulary folder's kept_tokens.json lists for tokenizer `name` (checked by KeptTokens)."""
    if path.stat().st_size > MAX_KEPT_TOKENS_BYTES:
        raise ValueError(f"{path}: larger than {MAX_KEPT_TOKENS_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("tokenizer") != name or "ids" not in data:
        raise ValueError(f"{path}: expected {{'tokenizer': {name!r}, 'ids': [...]}}")
    return data["ids"]


class Tokenizer:
    """Shared padding/masking logic; subclasses turn one caption into a list of ids."""

    name: str
    vocab_size: int
    pad_token: int
    kept: KeptTokens | None = None

    def __init__(self, text_ctx: int):
        if int(text_ctx) < 2:
            raise ValueError(f"text_ctx must be at least 2, got {text_ctx}")
        self.text_ctx = int(text_ctx)

    def ids(self, caption: str) -> tuple[list[int], bool]:
        """Ids of one caption, cut to text_ctx, and whether it was truncated. "" gives []."""
        raise NotImplementedError

    def encode(self, captions: Sequence[str], return_truncated: bool = False):
        """(tokens LongTensor[B, text_ctx], mask BoolTensor[B, text_ctx]); with return_truncated=True
        also a list of bools telling which captions were cut to fit."""
        if isinstance(captions, str):
            captions = [captions]
        tokens = torch.full((len(captions), self.text_ctx), self.pad_token, dtype=torch.long)
        mask = torch.zeros((len(captions), self.text_ctx), dtype=torch.bool)
        truncated = []
        for row, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise TypeError(f"caption {row} must be a str, got {type(caption).__name__}")
            ids, cut = self.ids(caption)
            if self.kept is not None:
                ids = self.kept.map(ids)
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = True
            truncated.append(cut)
        return (tokens, mask, truncated) if return_truncated else (tokens, mask)

    def empty(self, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """n copies of the empty caption: all padding, mask all False."""
        return (
            torch.full((n, self.text_ctx), self.pad_token, dtype=torch.long),
            torch.zeros((n, self.text_ctx), dtype=torch.bool),
        )

    def keep_only(self, ids: Sequence[int]) -> None:
        """Trim the vocabulary to `ids` (in row order, the padding token among them); other ids become the unknown
        token, the last row. The model's token embedding then has `vocab_size` = len(ids) + 1 rows."""
        full = type(self)
        self.kept = KeptTokens(ids, full.vocab_size, full.pad_token)
        self.vocab_size = self.kept.rows
        self.pad_token = self.kept.map([full.pad_token])[0]

    def save_files(self, directory: str | os.PathLike) -> list[Path]:
        """Copy the vocabulary files (and a trimmed vocabulary's kept ids) into `directory` (a model folder), so it
        is self-contained."""
        written = self._save_vocabulary(Path(directory))
        if self.kept is not None:
            target = Path(directory) / KEPT_TOKENS_FILE
            atomic_write_bytes(target, json.dumps({"tokenizer": self.name, "ids": list(self.kept.ids)}).encode())
            written.append(target)
        return written

    def _save_vocabulary(self, directory: Path) -> list[Path]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, text_ctx={self.text_ctx}, vocab_size={self.vocab_size})"


# ------------------------------------------------------------------------------------------- GPT-2
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class BytePairEncoder:
    """GPT-2 byte-level BPE: regex pre-split, bytes mapped to unicode, merges applied by rank."""

    def __init__(self, encoder: dict[str, int], merges: list[tuple[str, str]]):
        self.encoder = encoder
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_chars = _byte_alphabet()
        self._cache: dict[str, list[int]] = {}

    def _merge(self, word: str) -> list[str]:
        parts = list(word)
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _GPT2_SPLIT.findall(text):
            cached = self._cache.get(piece)
            if cached is None:
                word = "".join(self.byte_chars[b] for b in piece.encode("utf-8"))
                cached = [self.encoder[p] for p in self._merge(word)]
                if len(self._cache) < 100_000:
                    self._cache[piece] = cached
            ids.extend(cached)
        return ids


def _read_text(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8") as f:
        return f.read()


def _find(directory: Path, *names: str) -> Path | None:
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _parse_merges(text: str) -> list[tuple[str, str]]:
    merges = []
    for line in text.splitlines():
        if not line or line.startswith("#version"):
            continue
        a, b = line.split(" ")
        merges.append((a, b))
    return merges


def packaged_gpt2_dir() -> Path:
    """GPT-2's BPE files shipped as package data (OpenAI's gpt-2 release, MIT licence)."""
    return Path(str(files("finetune").joinpath(*PACKAGED_GPT2_DIR)))


def _load_gpt2_vocab(vocab_path) -> tuple[dict[str, int], list[tuple[str, str]], list[Path]]:
    how = (
        "the gpt2 tokenizer needs GPT-2's BPE files: pass a directory holding encoder.json and vocab.bpe "
        "(gzipped or not) or a Hugging Face GPT-2 tokenizer directory (vocab.json + merges.txt, or tokenizer.json)"
    )
    if vocab_path is None:
        vocab_path = packaged_gpt2_dir()
    directory = Path(vocab_path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"GPT-2 vocab path {str(directory)!r} is not a directory; {how}")
    encoder_file = _find(directory, "encoder.json", "vocab.json")
    merges_file = _find(directory, "vocab.bpe", "merges.txt")
    if encoder_file and merges_file:
        encoder = json.loads(_read_text(encoder_file))
        merges = _parse_merges(_read_text(merges_file))
        sources = [encoder_file, merges_file]
    elif (directory / "tokenizer.json").is_file():
        model = json.loads(_read_text(directory / "tokenizer.json")).get("model", {})
        if model.get("type") != "BPE":
            raise ValueError(f"{directory / 'tokenizer.json'} is not a BPE tokenizer")
        encoder = model["vocab"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        sources = [directory / "tokenizer.json"]
    else:
        raise FileNotFoundError(f"no GPT-2 BPE files in {str(directory)!r}; {how}")
    if len(encoder) != GPT2_VOCAB_SIZE:
        raise ValueError(f"{sources[0]} has {len(encoder)} entries; GPT-2's vocabulary has {GPT2_VOCAB_SIZE}")
    return encoder, merges, sources


class GPT2Tokenizer(Tokenizer):
    name = "gpt2"
    vocab_size = GPT2_VOCAB_SIZE
    pad_token = GPT2_END_TOKEN

    def __init__(self, text_ctx: int, vocab_path: str | os.PathLike | None):
        super().__init__(text_ctx)
        encoder, merges, _ = _load_gpt2_vocab(vocab_path)
        self._encoder_table, self._merges = encoder, merges
        self.bpe = BytePairEncoder(encoder, merges)

    def ids(self, caption: str) -> tuple[list[int], bool]:
        ids = self.bpe.encode(caption.lower())
        return ids[: self.text_ctx], len(ids) > self.text_ctx

    def _save_vocabulary(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        encoder_bytes = json.dumps(self._encoder_table, ensure_ascii=False).encode("utf-8")
        merges_bytes = ("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in self._merges) + "\n").encode("utf-8")
        written = []
        for name, data in zip(GPT2_FILES, (encoder_bytes, merges_bytes)):
            target = directory / name
            atomic_write_bytes(target, gzip.compress(data, mtime=0))
            written.append(target)
        return written


# -------------------------------------------------------------------------------------------- CLIP
class CLIPTokenizer(Tokenizer):
    name = "clip"
    vocab_size = 49408
    pad_token = 0

    def __init__(self, text_ctx: int, vocab_path: str | os.PathLike | None = None):
        super().__init__(text_ctx)
        from open_clip.tokenizer import SimpleTokenizer, default_bpe  # lazy for start-up time: open_clip loads seconds

        bpe_file = Path(default_bpe())
        if vocab_path is not None:
            given = Path(vocab_path).expanduser()
            if given.is_dir() and (given / CLIP_VOCAB_FILE).is_file():
                bpe_file = given / CLIP_VOCAB_FILE
            elif given.is_file():
                bpe_file = given
            elif not given.is_dir():
                raise FileNotFoundError(f"CLIP vocab path {str(given)!r} does not exist")
        self.bpe_file = bpe_file
        self._clip = SimpleTokenizer(bpe_path=str(bpe_file))
        self.sot, self.eot = self._clip.sot_token_id, self._clip.eot_token_id

    def ids(self, caption: str) -> tuple[list[int], bool]:
        body = self._clip.encode(caption)
        if not body:
            return [], False
        room = self.text_ctx - 2
        return [self.sot, *body[:room], self.eot], len(body) > room

    def _save_vocabulary(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / CLIP_VOCAB_FILE
        atomic_write_bytes(target, self.bpe_file.read_bytes())
        return [target]


# ------------------------------------------------------------------------------------------ common
TOKENIZERS = {"clip": CLIPTokenizer, "gpt2": GPT2Tokenizer}


def get_tokenizer(name: str, text_ctx: int, vocab_path: str | os.PathLike | None = None) -> Tokenizer:
    """A tokenizer by name ("clip" or "gpt2"); `vocab_path` is a directory of vocabulary files overriding the
    shipped ones (GPT-2's ship with this package, CLIP's with open_clip); a kept_tokens.json there trims the
    vocabulary (see Tokenizer.keep_only)."""
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; known: {', '.join(TOKENIZERS)}")
    tokenizer = TOKENIZERS[name](text_ctx, vocab_path)
    kept = Path(vocab_path).expanduser() / KEPT_TOKENS_FILE if vocab_path is not None else None
    if kept is not None and kept.is_file():
        tokenizer.keep_only(read_kept_tokens(kept, name))
    return tokenizer
