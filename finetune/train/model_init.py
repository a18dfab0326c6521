"""Where the starting weights come from: from scratch at a preset, a released model's name (fetched into the model
cache, then read as a model folder), an OpenAI GLIDE `.pt`, or one of our model folders; plus the two conversions
fine-tuning needs:

- an inpainting model from a plain checkpoint: the extra input channels (masked image, mask) start at zero, so the
  converted model initially behaves exactly like the plain one;
- a vocabulary swap (e.g. GLIDE's gpt2 tokens -> clip): the token embedding is re-initialised at the new size
  (same scale as the old one) and the trainer warms the text side up with the UNet frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from data_pipeline.errors import UserError
from finetune.bundled_models import bundled_model_path
from finetune.hub import HubError, ensure_model, is_model_name, is_pipeline_name
from finetune.hub.manifest import manifest_entry
from finetune.model import build_model, get_preset, list_presets, resolve_options
from finetune.model.options import architecture
from finetune.model_folder import load_model_folder, load_openai_checkpoint, read_config
from finetune.tokenizers import get_tokenizer

TEXT_SIDE_PREFIXES = (
    "transformer.",
    "final_ln.",
    "token_embedding.",
    "positional_embedding",
    "padding_embedding",
    "transformer_proj.",
)
INPUT_CONV = "input_blocks.0.0.weight"
TOKEN_EMBEDDING = "token_embedding.weight"
INPUT_CONVERTED_NOTE = "input convolution converted"  # begins the note of a converted input convolution
BUNDLED_INIT = "bundled"  # --init name of the bundled base model (as sampling's --model bundled)


class InitError(UserError, ValueError):
    """The starting weights do not fit the requested model, or a needed file is missing."""


@dataclass
class ModelSetup:
    model: torch.nn.Module
    options: dict[str, Any]
    tokenizer: Any
    preset: str
    source: str  # "scratch", "openai", "folder"
    vocab_swapped: bool = False
    notes: list[str] = field(default_factory=list)


def is_text_side(name: str) -> bool:
    return name.startswith(TEXT_SIDE_PREFIXES)


def _input_layout(options: dict[str, Any]) -> list[tuple[str, int]]:
    """Named channel groups of the first convolution, in GLIDE's order."""
    layout = [("x", 3)]
    if options.get("inpaint"):
        layout += [("inpaint_image", 3), ("inpaint_mask", 1)]
    if options.get("super_res"):
        layout += [("low_res", 3)]
    if options.get("coord_channels"):
        layout += [("coords", 2)]
    return layout


def _layout_for_channels(channels: int) -> list[tuple[str, int]]:
    plain = {3: {}, 6: {"super_res": True}, 7: {"inpaint": True}, 10: {"inpaint": True, "super_res": True}}
    known = {**plain, **{n + 2: {**flags, "coord_channels": True} for n, flags in plain.items()}}
    if channels not in known:
        expected = ", ".join(str(n) for n in sorted(known))
        raise InitError(f"checkpoint's first convolution has {channels} input channels; expected one of {expected}")
    return _input_layout(known[channels])


def _convert_input_conv(source: torch.Tensor, target: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
    """Map the source's input channel groups onto the target's; groups the source lacks start at zero."""
    src_layout = _layout_for_channels(source.shape[1])
    dst_layout = _input_layout(options)
    src_at, pos = {}, 0
    for name, n in src_layout:
        src_at[name] = (pos, n)
        pos += n
    missing = [name for name, _ in src_layout if name not in dict(dst_layout)]
    if missing:
        raise InitError(
            f"the checkpoint has input channels for {', '.join(missing)} that the target model lacks "
            "(an inpainting/upsampler checkpoint cannot start a plain model)"
        )
    out = torch.zeros_like(target)
    pos = 0
    for name, n in dst_layout:
        if name in src_at:
            s, _ = src_at[name]
            out[:, pos : pos + n] = source[:, s : s + n].to(out.dtype)
        pos += n
    return out


def transfer_weights(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    options: dict[str, Any],
    allow_vocab_swap: bool,
    seed: int = 0,
) -> tuple[bool, list[str]]:
    """Load `state` into `model`, converting the input conv and the token embedding where allowed.

    Returns (vocab_swapped, notes). Anything else that does not match raises InitError listing the differences.
    """
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = [k for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    convertible = {
        k
        for k in mismatched
        if (k == INPUT_CONV and state[k].shape[0] == target[k].shape[0] and state[k].shape[2:] == target[k].shape[2:])
        or (k == TOKEN_EMBEDDING and allow_vocab_swap and state[k].shape[1] == target[k].shape[1])
    }
    unresolved = [k for k in mismatched if k not in convertible]
    if missing or unexpected or unresolved:
        parts = []
        if unresolved:
            parts.append(
                "shape mismatches: "
                + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in unresolved[:5])
            )
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
        raise InitError("the checkpoint is for another model/preset: " + "; ".join(parts))
    notes: list[str] = []
    vocab_swapped = False
    new_state = {}
    if INPUT_CONV in convertible:
        new_state[INPUT_CONV] = _convert_input_conv(state[INPUT_CONV], target[INPUT_CONV], options)
        notes.append(
            f"{INPUT_CONVERTED_NOTE} from {state[INPUT_CONV].shape[1]} to "
            f"{target[INPUT_CONV].shape[1]} channels (new channels zero-initialised)"
        )
    if TOKEN_EMBEDDING in convertible:
        old, shape = state[TOKEN_EMBEDDING], target[TOKEN_EMBEDDING].shape
        std = float(old.float().std())
        fresh = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * std
        new_state[TOKEN_EMBEDDING] = fresh.to(target[TOKEN_EMBEDDING].dtype)
        notes.append(
            f"token embedding re-initialised for the new vocabulary ({old.shape[0]} -> {shape[0]} tokens, "
            f"std {std:.4f})"
        )
        vocab_swapped = True
    merged = {k: (new_state[k] if k in new_state else state[k]) for k in target}
    model.load_state_dict(merged, strict=True)
    return vocab_swapped, notes


def detect_preset(state: dict[str, torch.Tensor], tokenizer: str) -> str:
    """The preset whose parameter names and shapes equal the checkpoint's (built on the meta device)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    matches = []
    for name in list_presets():
        options = resolve_options({**get_preset(name), "tokenizer": tokenizer})
        arch = architecture(options)
        first_conv = (int(options["num_channels"] * arch["channel_mult"][0]), arch["in_channels"], 3, 3)
        if shapes.get(INPUT_CONV) != first_conv or shapes.get("positional_embedding") != (
            options["text_ctx"],
            options["xf_width"],
        ):
            continue  # cheap rejection before building the candidate
        with torch.device("meta"):
            candidate = build_model(options)
        if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
            matches.append(name)
    if not matches:
        raise InitError(
            "the checkpoint matches none of the presets "
            f"({', '.join(list_presets())}); pass --preset for the architecture it was trained with"
        )
    return matches[0]


def _tokenizer(name: str, text_ctx: int, vocab_path: str | None):
    try:
        return get_tokenizer(name, text_ctx, vocab_path or None)
    except (OSError, ValueError) as exc:
        raise InitError(f"cannot load the {name} tokenizer from {vocab_path or 'its packaged files'}: {exc}") from None


def _apply_preset_options(preset: str, tokenizer: str) -> dict[str, Any]:
    try:
        options = get_preset(preset)
    except KeyError as exc:
        raise InitError(str(exc.args[0])) from None
    options["tokenizer"] = tokenizer
    return resolve_options(options)


def _is_release_name(init: str) -> bool:
    """A released model's or pipeline's name (an existing file or folder of that name wins)."""
    return (is_model_name(init) or is_pipeline_name(init)) and not Path(init).exists()


def resolve_init(init: str) -> str:
    """`init` with a released model's name replaced by its model folder in the cache (fetched on first use), and
    `bundled` by the bundled base's folder."""
    if init == BUNDLED_INIT and not Path(init).exists():
        try:
            return str(bundled_model_path("base"))
        except FileNotFoundError as exc:
            raise InitError(f"--init {init}: {exc}") from None
    if init == "scratch" or not _is_release_name(init):
        return init
    try:
        return str(ensure_model(init))
    except HubError as exc:
        raise InitError(f"--init {init}: {exc}") from None


def planned_image_size(init: str, preset: str) -> int | None:
    """The image size the model will have, known without loading weights (None: only after detection)."""
    try:
        if preset:
            return int(get_preset(preset)["image_size"])
        if init != "scratch" and _is_release_name(init):
            return int(resolve_options(manifest_entry(init)["options"])["image_size"])
        folder = resolve_init(init) if init == BUNDLED_INIT else init
        if init != "scratch" and Path(folder).is_dir():
            return int(read_config(folder)["options"]["image_size"])  # options checked by read_config
    except (KeyError, ValueError, OSError):
        return None  # setup_model reports the problem properly (a pipeline name, an unreadable manifest...)
    return None


def setup_model(
    init: str, preset: str = "", tokenizer: str = "", vocab_path: str = "", seed: int = 0, init_from_ema: bool = True
) -> ModelSetup:
    """Build the model to train and its tokenizer (see the module docstring)."""
    torch.manual_seed(seed)
    if init == "scratch":
        if not preset:
            raise InitError("--preset is required when training from scratch")
        options = _apply_preset_options(preset, tokenizer or "clip")
        tok = _tokenizer(options["tokenizer"], options["text_ctx"], vocab_path)
        return ModelSetup(build_model(options), options, tok, preset, "scratch")

    path = Path(resolve_init(init))
    if not path.exists():
        raise InitError(
            f"--init {init!r} is neither 'scratch', a released model's name, nor an existing .pt file or model folder"
        )

    if path.is_dir():
        try:
            loaded = load_model_folder(path, device="cpu", use_ema=init_from_ema, vocab_path=vocab_path or None)
        except (OSError, ValueError, KeyError) as exc:
            raise InitError(f"cannot load model folder {path}: {exc}") from None
        src_options = dict(loaded.options)
        src_preset = (loaded.config or {}).get("preset", "") if isinstance(loaded.config, dict) else ""
        want_tok = tokenizer or src_options["tokenizer"]
        if preset:
            options = _apply_preset_options(preset, want_tok)
            if want_tok == src_options["tokenizer"]:
                options["text_ctx"] = src_options["text_ctx"]
        else:
            options = resolve_options({**src_options, "tokenizer": want_tok})
        if want_tok == src_options["tokenizer"]:
            tok = loaded.tokenizer
        else:
            tok = _tokenizer(want_tok, options["text_ctx"], vocab_path)
        model = build_model(options)
        swapped, notes = transfer_weights(
            model, loaded.model.state_dict(), options, allow_vocab_swap=want_tok != src_options["tokenizer"], seed=seed
        )
        return ModelSetup(model, options, tok, preset or src_preset, "folder", swapped, notes)

    try:
        state = load_openai_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable .pt is reported the same way
        raise InitError(f"cannot read OpenAI checkpoint {path}: {exc}") from None
    want_tok = tokenizer or "gpt2"
    notes = []
    if not preset:
        preset = detect_preset(state, "gpt2")
        notes.append(f"checkpoint architecture detected as preset {preset}")
    options = _apply_preset_options(preset, want_tok)
    tok = _tokenizer(want_tok, options["text_ctx"], vocab_path)
    model = build_model(options)
    swapped, more = transfer_weights(model, state, options, allow_vocab_swap=want_tok != "gpt2", seed=seed)
    return ModelSetup(model, options, tok, preset, "openai", swapped, notes + more)
