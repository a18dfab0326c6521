"""Model options: OpenAI's option names, GLIDE's defaults, named presets and validation.

An options dict is plain JSON-able data (it is stored in a model folder's config.json). Missing
options take GLIDE's base defaults, or the upsampler's defaults when ``super_res`` is true. Each
value's type and range is checked against ``finetune.model.limits.OPTION_LIMITS`` before anything
is built from it.
"""

from __future__ import annotations

import copy
from typing import Any

from data_pipeline.errors import UserError

from .limits import VOCAB_SIZES, OptionError, check_options, parse_int_list

# GLIDE's base model (OpenAI's `model_and_diffusion_defaults`, with use_fp16 off: fp16 weights are
# a GPU-only choice and autocast is the faster path anyway).
BASE_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 192,
    "num_res_blocks": 3,
    "channel_mult": "",
    "num_heads": 1,
    "num_head_channels": 64,
    "num_heads_upsample": -1,
    "attention_resolutions": "32,16,8",
    "dropout": 0.1,
    "text_ctx": 128,
    "xf_width": 512,
    "xf_layers": 16,
    "xf_heads": 8,
    "xf_final_ln": True,
    "xf_padding": True,
    "diffusion_steps": 1000,
    "noise_schedule": "squaredcos_cap_v2",
    "timestep_respacing": "",
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_fp16": False,
    "cache_text_emb": False,
    "inpaint": False,
    "super_res": False,
    # Not in GLIDE: two extra input channels holding each pixel's x and y in [-1, 1], so the network knows where
    # a pixel is (convolutions and attention alone are translation-equivariant) and can follow "in the top left".
    "coord_channels": False,
    "tokenizer": "gpt2",
    # Not in GLIDE: token embedding rows of a model whose vocabulary was trimmed to the tokens its captions use
    # (finetune.vocab_trim; its tokenizer reads the kept ids from kept_tokens.json). 0: the whole vocabulary.
    "token_rows": 0,
}

UPSAMPLER_OVERRIDES: dict[str, Any] = {
    "image_size": 256,
    "num_res_blocks": 2,
    "noise_schedule": "linear",
    "super_res": True,
}

# Options that only the diffusion process reads; the network ignores them.
DIFFUSION_OPTION_NAMES = ("diffusion_steps", "noise_schedule", "timestep_respacing")

# Channel multipliers GLIDE picks when `channel_mult` is empty.
DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}

GROUPNORM_GROUPS = 32


def _preset_table() -> dict[str, dict[str, Any]]:
    base = dict(BASE_DEFAULTS)
    upsample = {**BASE_DEFAULTS, **UPSAMPLER_OVERRIDES}
    # Architecture of the reference fixtures' tiny models, with the CLIP tokenizer (new models use it).
    tiny = {
        "num_channels": 32,
        "num_res_blocks": 1,
        "num_heads": 1,
        "num_head_channels": 16,
        "dropout": 0.0,
        "text_ctx": 16,
        "xf_width": 32,
        "xf_layers": 2,
        "xf_heads": 2,
        "tokenizer": "clip",
    }
    tiny_base = {**base, **tiny, "image_size": 32, "channel_mult": "1,2,2", "attention_resolutions": "16,8"}
    tiny_upsample = {**upsample, **tiny, "image_size": 64, "channel_mult": "1,1,2,2", "attention_resolutions": "16"}
    # Small CPU-trainable models for the bundled 32px base (13.0M parameters) and 32->128 upsampler (3.7M):
    # about 34 MB together in fp16, most of it the CLIP token embeddings (49,408 rows).
    small_base32 = {
        **base,
        "image_size": 32,
        "num_channels": 64,
        "num_res_blocks": 2,
        "channel_mult": "1,1,2",
        "attention_resolutions": "16,8",
        "num_head_channels": 32,
        "dropout": 0.1,
        "text_ctx": 48,
        "xf_width": 128,
        "xf_layers": 4,
        "xf_heads": 4,
        "tokenizer": "clip",
    }
    small_upsample128 = {
        **upsample,
        "image_size": 128,
        "num_channels": 32,
        "num_res_blocks": 1,
        "channel_mult": "1,1,2,2,2",
        "attention_resolutions": "16",
        "num_head_channels": 32,
        "dropout": 0.0,
        "text_ctx": 48,
        "xf_width": 32,
        "xf_layers": 2,
        "xf_heads": 2,
        "tokenizer": "clip",
    }
    return {
        "glide-base": base,
        "glide-upsample": upsample,
        "glide-base-inpaint": {**base, "inpaint": True},
        "glide-upsample-inpaint": {**upsample, "inpaint": True},
        "tiny-base": tiny_base,
        "tiny-upsample": tiny_upsample,
        "tiny-base-inpaint": {**tiny_base, "inpaint": True},
        "tiny-upsample-inpaint": {**tiny_upsample, "inpaint": True},
        "small-base32": small_base32,
        "small-upsample128": small_upsample128,
    }


PRESETS: dict[str, dict[str, Any]] = _preset_table()


class UnknownPresetError(UserError, KeyError, ValueError):
    """An unknown preset name (a KeyError for lookups, a ValueError for argument checks)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> dict[str, Any]:
    """Options dict of a named preset (a fresh copy the caller may edit)."""
    if name not in PRESETS:
        raise UnknownPresetError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _int_list(value: Any, name: str) -> tuple[int, ...]:
    try:
        return parse_int_list(value)
    except ValueError:
        raise OptionError(
            f"option {name!r} must be a comma-separated string or a list of integers, got {value!r}"
        ) from None


def _as_csv(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(int(v)) for v in value)
    return str(value)


def resolve_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Fill in defaults, normalise list-valued options to OpenAI's comma strings, and validate.

    Raises OptionError (a ValueError) naming the first bad field, e.g.
    ``options.num_res_blocks=10000000 is out of range 1..8``."""
    options = dict(options or {})
    check_options(options)  # names, types and ranges, before any of it is used
    resolved = dict(BASE_DEFAULTS)
    if options.get("super_res", False):
        resolved.update(UPSAMPLER_OVERRIDES)
    resolved.update(options)
    resolved["channel_mult"] = _as_csv(resolved["channel_mult"])
    resolved["attention_resolutions"] = _as_csv(resolved["attention_resolutions"])
    architecture(resolved)  # raises on inconsistent options
    return resolved


def architecture(options: dict[str, Any]) -> dict[str, Any]:
    """Derived, validated quantities the network constructor needs (channel_mult tuple, attention strides...)."""
    image_size = int(options["image_size"])
    if options["channel_mult"] in ("", None):
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(
                f"image_size {image_size} has no default channel_mult (known: {sorted(DEFAULT_CHANNEL_MULT)}); "
                "give channel_mult explicitly"
            )
        channel_mult = DEFAULT_CHANNEL_MULT[image_size]
    else:
        channel_mult = _int_list(options["channel_mult"], "channel_mult")
        if not channel_mult or 2 ** (len(channel_mult) + 2) != image_size:
            raise ValueError(
                f"channel_mult {options['channel_mult']!r} has {len(channel_mult)} levels; image_size {image_size} "
                f"needs 2**(levels+2) == image_size"
            )
    attention_resolutions = _int_list(options["attention_resolutions"], "attention_resolutions")
    for res in attention_resolutions:
        if res <= 0 or image_size % res:
            raise ValueError(f"attention resolution {res} does not divide image_size {image_size}")
    num_channels = int(options["num_channels"])
    for mult in channel_mult:
        width = num_channels * mult
        if width % GROUPNORM_GROUPS:
            raise ValueError(
                f"every level's width (num_channels * channel_mult) must be a multiple of {GROUPNORM_GROUPS} "
                f"(GroupNorm groups); got {num_channels} * {mult} = {width}"
            )
        if options["num_head_channels"] != -1 and width % int(options["num_head_channels"]):
            raise ValueError(f"width {width} is not divisible by num_head_channels {options['num_head_channels']}")
    xf_width = int(options["xf_width"] or 0)
    if xf_width:
        if xf_width % int(options["xf_heads"]):
            raise ValueError(f"xf_width {xf_width} is not divisible by xf_heads {options['xf_heads']}")
        if int(options["text_ctx"]) <= 0:
            raise ValueError("text_ctx must be positive when the model has a text transformer")
    tokenizer = options["tokenizer"]
    if tokenizer not in VOCAB_SIZES:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; known: {', '.join(VOCAB_SIZES)}")
    vocab_size = int(options.get("token_rows") or 0) or VOCAB_SIZES[tokenizer]
    if vocab_size > VOCAB_SIZES[tokenizer]:
        raise ValueError(f"token_rows {vocab_size} is more than the {tokenizer} vocabulary's {VOCAB_SIZES[tokenizer]}")
    in_channels = 3
    if options["super_res"]:
        in_channels += 3
    if options["inpaint"]:
        in_channels += 4
    if options.get("coord_channels"):
        in_channels += 2
    num_heads_upsample = int(options["num_heads_upsample"])
    return {
        "image_size": image_size,
        "channel_mult": channel_mult,
        "attention_strides": tuple(image_size // res for res in attention_resolutions),
        "in_channels": in_channels,
        "out_channels": 6,
        "num_heads_upsample": int(options["num_heads"]) if num_heads_upsample == -1 else num_heads_upsample,
        "vocab_size": vocab_size,
        "xf_width": xf_width,
    }
