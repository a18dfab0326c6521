"""Model folders (our format) and OpenAI .pt checkpoints.

A model folder holds ``config.json`` (format version, options, preset, tokenizer name),
``model.safetensors``, optionally ``ema.safetensors``, the tokenizer's vocabulary files and
``provenance.json``. A folder is built beside its destination and swapped in, so readers never
see a half-written one, and an existing folder that is not a model folder is never overwritten. OpenAI ``.pt`` files
are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import mmap
import os
import pickle
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from data_pipeline.errors import UserError
from data_pipeline.fsutil import atomic_write, publish_dir

from .model import build_model, resolve_options
from .tokenizers import Tokenizer, get_tokenizer

logger = logging.getLogger(__name__)

MODEL_FOLDER_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
PROVENANCE_FILE = "provenance.json"


class ModelFolderError(UserError, ValueError):
    """A checkpoint or model folder that cannot be loaded as asked."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    options: dict[str, Any]
    tokenizer: Tokenizer
    config: dict[str, Any]
    path: Path


# ------------------------------------------------------------------------------------ atomic writes
def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n"))


# safetensors' names of the dtypes a checkpoint holds
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
MADV_PAGEOUT = 21  # Linux >= 5.4: drop the pages from this process (file-backed ones reload on use, nothing is lost)


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _page_out(tensor: torch.Tensor) -> None:
    """Ask the kernel to take a tensor's memory out of this process's resident set (a no-op where unsupported)."""
    page = mmap.PAGESIZE
    storage = tensor.untyped_storage()
    start = storage.data_ptr()
    first, last = -(-start // page) * page, (start + storage.nbytes()) // page * page
    if last > first:
        _libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), ctypes.c_int(MADV_PAGEOUT))


def _stream_safetensors(path: str, state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> None:
    """The safetensors format, written one tensor at a time; each source tensor's pages are let go once written.

    safetensors' save_file serialises all tensors in one call, which keeps every page of a memory-mapped
    checkpoint resident until the end: this keeps converting a 1.5 GB checkpoint at about one copy of it."""

    def stored(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to("cpu")
        return (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous()

    names = sorted(state_dict)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        t = state_dict[name]
        out_dtype = dtype if dtype is not None and t.is_floating_point() else t.dtype
        size = t.numel() * torch.empty((), dtype=out_dtype).element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[out_dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name in names:
            t = stored(state_dict[name])
            f.write(t.reshape(-1).view(torch.uint8).numpy().data)
            _page_out(state_dict[name])


def write_safetensors(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    dtype: torch.dtype | None = None,
    *,
    stream: bool = False,
) -> None:
    """Save a state_dict atomically; floating tensors are cast to `dtype` when given (e.g. float16 storage).

    `stream` writes tensor by tensor and lets go of each source tensor's pages (for memory-mapped sources, such
    as a checkpoint being converted; never for a live model, whose pages would be pushed to swap)."""
    if stream:
        atomic_write(path, lambda tmp: _stream_safetensors(tmp, state_dict, dtype))
        return
    tensors = {}
    for name, t in state_dict.items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous()
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


# ------------------------------------------------------------------------------------ state dicts
def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside torch.compile / DistributedDataParallel wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Raise ModelFolderError naming the first missing, unexpected and mis-shaped keys, if any."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k}: {what} {list(state_dict[k].shape)} vs model {list(expected[k])}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", misshaped)):
        if items:
            problems.append(f"{len(items)} {label} key(s) (first: {'; '.join(items[:3])})")
    if problems:
        raise ModelFolderError(f"{what} does not match the model: " + ", ".join(problems))


def load_state_dict_strict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint"
) -> None:
    check_state_dict(model, state_dict, what)
    model.load_state_dict(state_dict, strict=True)


def _torch_load_weights(path: Path, mmap: bool) -> Any:
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # files in torch's legacy (pre-zip) format cannot be memory-mapped: read them whole
    return torch.load(path, map_location="cpu", weights_only=True)


# torch words the refusal differently across versions ("Unsupported global: GLOBAL pathlib.Path.touch was not an
# allowed global", "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"), but always names
# the pickle opcode GLOBAL right before the object: take the (dotted) name that follows it, whatever surrounds it.
_REFUSED_GLOBAL = re.compile(r"\bGLOBAL\s+['\"`]?([A-Za-z_](?:[\w.]*\w)?)")
_OS_IMPLEMENTATION_MODULES = ("posix.", "nt.")  # os.system pickles as posix.system (nt.system on Windows)


def refused_global_name(message: str) -> str | None:
    """The Python object named in a weights-only unpickling error, e.g. 'os.system'; None when none is named."""
    found = _REFUSED_GLOBAL.search(message)
    if found is None:
        return None
    name = found.group(1)
    for prefix in _OS_IMPLEMENTATION_MODULES:
        if name.startswith(prefix):
            return "os." + name[len(prefix) :]
    return name


def load_openai_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, torch.Tensor]:
    """State dict of an OpenAI GLIDE .pt file, read with weights_only=True (no code is ever unpickled).

    `mmap` maps the tensors from the file instead of reading them into memory (pages load as they are used)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = _torch_load_weights(path, mmap)
    except pickle.UnpicklingError as e:
        name = refused_global_name(str(e))
        if name is None:
            raise ModelFolderError(
                f"{path} is not a readable PyTorch checkpoint (weights-only unpickling failed)"
            ) from None
        raise ModelFolderError(
            f"refusing to load {path}: it references the Python object {name}, and unpickling it could run "
            "code; only tensors are read (weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ModelFolderError(f"{path} is not a readable PyTorch checkpoint: {e}") from None
    if isinstance(data, dict) and not all(torch.is_tensor(v) for v in data.values()):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in data.items())
    ):
        raise ModelFolderError(f"{path} does not hold a state_dict (a mapping of parameter names to tensors)")
    return data


# ------------------------------------------------------------------------------------ model folders
def code_version() -> str:
    """Installed package version, plus the git commit when running from a checkout."""
    try:
        text = version("autocomics")
    except PackageNotFoundError:
        text = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{text}+g{commit}" if commit else text


def write_model_folder(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    options: dict[str, Any],
    tokenizer: Tokenizer | None = None,
    ema_state_dict: Mapping[str, torch.Tensor] | None = None,
    provenance: dict[str, Any] | None = None,
    preset: str | None = None,
    dtype: torch.dtype | None = None,
    *,
    stream: bool = False,
) -> Path:
    """Write a model folder from state dicts. `tokenizer` None writes no vocabulary files (a gpt2
    folder then reads the package's). `stream`: see write_safetensors."""
    path = Path(path)
    options = resolve_options(options)
    if tokenizer is not None and tokenizer.name != options["tokenizer"]:
        raise ValueError(
            f"tokenizer {tokenizer.name!r} does not match the model's tokenizer option {options['tokenizer']!r}"
        )
    if ema_state_dict is not None and set(ema_state_dict) != set(state_dict):
        raise ValueError("the EMA state_dict must have the same keys as the model state_dict")
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / CONFIG_FILE).is_file())):
        raise FileExistsError(f"{path} exists and is not a model folder; refusing to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build the folder beside its destination, then swap it in: readers never see a half-written folder.
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        tmp.chmod(0o755)
        write_safetensors(tmp / WEIGHTS_FILE, state_dict, dtype, stream=stream)
        if ema_state_dict is not None:
            write_safetensors(tmp / EMA_FILE, ema_state_dict, dtype, stream=stream)
        tokenizer_files = [p.name for p in tokenizer.save_files(tmp)] if tokenizer is not None else []
        write_json(
            tmp / PROVENANCE_FILE,
            {
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "code_version": code_version(),
                **(provenance or {}),
            },
        )
        config = {
            "format_version": MODEL_FOLDER_FORMAT_VERSION,
            "preset": preset,
            "tokenizer": options["tokenizer"],
            "tokenizer_files": tokenizer_files,
            "has_ema": ema_state_dict is not None,
            "storage_dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
            "options": stored_options(options),
        }
        write_json(tmp / CONFIG_FILE, config)
        publish_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def stored_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options as config.json records them: an untrimmed vocabulary's `token_rows` (0) is left out, so a folder
    written today has the same config bytes, hence the same model id, as one written before the option existed."""
    return {k: v for k, v in options.items() if not (k == "token_rows" and not v)}


def save_model_folder(
    path: str | os.PathLike,
    model: torch.nn.Module,
    options: dict[str, Any] | None = None,
    tokenizer: Tokenizer | None = None,
    ema_state_dict: Mapping[str, torch.Tensor] | None = None,
    provenance: dict[str, Any] | None = None,
    *,
    preset: str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Save a model (and optionally its EMA weights) as a model folder; `dtype=torch.float16` stores half weights."""
    model = unwrap_model(model)
    options = options if options is not None else model.options
    return write_model_folder(path, model.state_dict(), options, tokenizer, ema_state_dict, provenance, preset, dtype)


MAX_CONFIG_BYTES = 1 << 20  # a model folder's config.json is a few kB; refuse to parse anything far larger
CONFIG_KEYS = ("format_version", "preset", "tokenizer", "tokenizer_files", "has_ema", "storage_dtype", "options")


def read_json_object(path: Path, max_bytes: int, error: type[Exception], what: str) -> dict[str, Any]:
    """A small JSON file that must hold one object (a config someone may have shared): its size is checked before
    it is read, and every failure is `error` naming the file."""
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{path}: {size} bytes; {what} is at most {max_bytes} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """A model folder's config.json, checked: format version, and every option typed and in range
    (``finetune.model.limits``) before anything is built from it. Errors name the file and field."""
    path = Path(path)
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a model folder (no {CONFIG_FILE})")
    config = read_json_object(config_file, MAX_CONFIG_BYTES, ModelFolderError, "a model config")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MODEL_FOLDER_FORMAT_VERSION:
        raise ModelFolderError(
            f"{config_file} has format_version {version!r}; this code reads 1..{MODEL_FOLDER_FORMAT_VERSION}"
        )
    if not isinstance(config.get("options"), dict):
        raise ModelFolderError(f"{config_file} has no options")
    unknown = sorted(str(k) for k in config if k not in CONFIG_KEYS)
    if unknown:  # reported, not refused: newer writers may add descriptive fields
        logger.warning("%s: ignoring unknown field(s) %s", config_file, ", ".join(unknown))
    try:
        config["options"] = resolve_options(config["options"])
    except ValueError as e:
        raise ModelFolderError(f"{config_file}: {e}") from None
    return config


def load_model_folder(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    use_ema: bool = True,
    vocab_path: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load a model folder: the model in eval mode (EMA weights when present and use_ema), its tokenizer.

    Weights are cast to `dtype` (float32 when None, whatever the storage dtype)."""
    path = Path(path)
    config = read_config(path)
    options = config["options"]
    weights = path / (EMA_FILE if use_ema and (path / EMA_FILE).is_file() else WEIGHTS_FILE)
    if not weights.is_file():
        raise FileNotFoundError(f"model folder {str(path)!r} has no {weights.name}")
    state_dict = load_file(weights, device=str(device))
    with torch.device("meta"):
        model = build_model(options)
    check_state_dict(model, state_dict, what=str(weights))
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.to(device=device, dtype=dtype or torch.float32)
    if options["use_fp16"] and dtype is None:
        model.convert_to_fp16()
    model.eval()
    # a folder written without vocabulary files reads the ones the package ships
    vocab = vocab_path or (path if config.get("tokenizer_files") else None)
    try:
        tokenizer = get_tokenizer(options["tokenizer"], options["text_ctx"], vocab)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"model folder {str(path)!r} has no {options['tokenizer']} vocabulary files; pass vocab_path ({e})"
        ) from None
    if tokenizer.vocab_size != model.vocab_size:  # e.g. a trimmed model's kept_tokens.json missing or overridden
        raise ModelFolderError(
            f"model folder {str(path)!r}: its tokenizer has {tokenizer.vocab_size} tokens but the model "
            f"{model.vocab_size} token embedding rows"
        )
    return LoadedModel(model=model, options=options, tokenizer=tokenizer, config=config, path=path)
