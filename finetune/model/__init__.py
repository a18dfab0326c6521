"""GLIDE's model core: the text-conditioned UNet, its options and presets."""

from __future__ import annotations

from typing import Any

from .options import BASE_DEFAULTS, VOCAB_SIZES, UnknownPresetError, get_preset, list_presets, resolve_options
from .text_encoder import TextEmbedding, concat_text_emb, index_text_emb
from .unet import Text2ImUNet


def build_model(options: dict[str, Any] | None = None) -> Text2ImUNet:
    """Build the UNet for an options dict (OpenAI's option names; missing ones take GLIDE's defaults).

    To build without allocating weights (e.g. to inspect a full-size model's state_dict), call it
    under ``with torch.device("meta"):``.
    """
    return Text2ImUNet(resolve_options(options))


__all__ = [
    "BASE_DEFAULTS",
    "VOCAB_SIZES",
    "Text2ImUNet",
    "TextEmbedding",
    "UnknownPresetError",
    "build_model",
    "concat_text_emb",
    "get_preset",
    "index_text_emb",
    "list_presets",
    "resolve_options",
]
