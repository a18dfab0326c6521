"""What an adapter is (rank, alpha, target layers), the defaults and bounds of each, and their checks.

Kept free of peft (which takes seconds to import), so the trainer's settings and every command line can name the
defaults and check values without loading it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import AdapterError

# An adapter folder's two files (finetune.adapters.format reads and writes them).
WEIGHTS_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"

# Every layer an adapter may target, by the last part(s) of its module name, and what it does.
KNOWN_TARGETS: dict[str, str] = {
    "qkv": "UNet attention: image positions -> queries, keys, values",
    "proj_out": "UNet attention: output projection",
    "encoder_kv": "UNet attention: caption sequence -> keys and values (how the caption steers each attention block)",
    "transformer_proj": "pooled caption -> the timestep embedding (how the caption steers every residual block)",
    "attn.c_qkv": "caption transformer attention: queries, keys, values",
    "attn.c_proj": "caption transformer attention: output projection",
    "mlp.c_fc": "caption transformer MLP: first layer",
    "mlp.c_proj": "caption transformer MLP: second layer",
    "emb_layers.1": "residual blocks: timestep + caption embedding -> scale and shift",
    "in_layers.2": "residual blocks: first 3x3 convolution (what the UNet draws: shapes, textures)",
    "out_layers.3": "residual blocks: second 3x3 convolution",
}

# Defaults: every attention projection of the UNet, the two ways the caption enters it (encoder_kv,
# transformer_proj) and the caption transformer's attention, which is where a new word learns what it means. All
# four GLIDE variants (base, upsampler, and their inpainting versions) have all of them; a model without a caption
# transformer (xf_width 0) has only the first two, and the others are skipped. At rank 16 that is 0.7% of
# glide-base's weights (2.6M, a 10 MiB float32 file); the convolutions, which hold most of the UNet's weights, are
# left alone unless asked for (`in_layers.2`, `out_layers.3`: needed to teach a shape the model never drew).
DEFAULT_TARGETS: tuple[str, ...] = ("qkv", "proj_out", "encoder_kv", "transformer_proj", "attn.c_qkv", "attn.c_proj")

DEFAULT_RANK = 16  # what the trainer trains when no --lora-rank is given
MAX_RANK = 512
MAX_ALPHA = 65536.0


@dataclass(frozen=True)
class LoraSettings:
    """What an adapter is: rank, alpha (None: equal to the rank, so the effective scale alpha/rank is 1) and the
    target layers (names from KNOWN_TARGETS)."""

    rank: int
    alpha: float | None = None
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        check_rank(self.rank)
        object.__setattr__(self, "alpha", check_alpha(float(self.rank) if self.alpha is None else self.alpha))
        object.__setattr__(self, "targets", check_targets(self.targets))
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterError(f"LoRA dropout {self.dropout!r} must be in [0, 1)")


def check_rank(rank) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= MAX_RANK:
        raise AdapterError(f"LoRA rank {rank!r} must be an integer in 1..{MAX_RANK}")
    return rank


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= MAX_ALPHA:
        raise AdapterError(f"LoRA alpha {alpha!r} must be a number in (0, {MAX_ALPHA:g}]")
    if not math.isfinite(alpha):
        raise AdapterError(f"LoRA alpha {alpha!r} must be finite")
    return float(alpha)


def check_targets(targets: Iterable[str]) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = [targets]
    targets = tuple(targets)
    unknown = [t for t in targets if not isinstance(t, str) or t not in KNOWN_TARGETS]
    if unknown:
        raise AdapterError(f"unknown LoRA target(s) {', '.join(map(repr, unknown))}; known: {', '.join(KNOWN_TARGETS)}")
    if not targets:
        raise AdapterError("no LoRA targets given")
    return tuple(t for t in KNOWN_TARGETS if t in targets)  # one order (KNOWN_TARGETS'), no repeats
