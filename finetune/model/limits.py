"""The type and accepted range of every model option, as data in one table (``OPTION_LIMITS``).

Options come from files people share (a model folder's config.json, a training checkpoint's state.json), so
each value is checked before anything is built from it: one field such as ``num_res_blocks: 1e7`` or
``diffusion_steps: 1e9`` would otherwise hang or exhaust memory long before a shape check could run.
The ranges admit every released GLIDE configuration (glide-base, glide-upsample and their inpainting
variants: 192 channels, 2-3 res blocks, a 512-wide 16-layer text transformer, 1000 diffusion steps) with
room for larger models. Cross-field rules (channel_mult levels against image_size, widths divisible by
heads, ...) live in ``finetune.model.options.architecture``.

``image_size`` is the size the model was built for; it is not a limit on the sizes one may sample at.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from data_pipeline.errors import UserError
from finetune.diffusion.schedules import NOISE_SCHEDULES


class OptionError(UserError, ValueError):
    """A model option of the wrong type or out of range; the message names the field."""


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Integer:
    low: int
    high: int
    sentinels: tuple[int, ...] = ()  # values outside the range with a meaning of their own (-1: derive it)

    def describe(self) -> str:
        extra = "".join(f" or {s}" for s in self.sentinels)
        return f"{self.low}..{self.high}{extra}"

    def problem(self, value: Any) -> str | None:
        if not _is_integer(value):
            return f"must be an integer in {self.describe()}"
        if value in self.sentinels or self.low <= value <= self.high:
            return None
        return f"is out of range {self.describe()}"


@dataclass(frozen=True)
class Number:
    low: float
    high: float

    def describe(self) -> str:
        return f"{self.low:g}..{self.high:g}"

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"must be a finite number in {self.describe()}"
        return None if self.low <= value <= self.high else f"is out of range {self.describe()}"


@dataclass(frozen=True)
class Flag:
    def describe(self) -> str:
        return "true or false"

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else "must be true or false"


@dataclass(frozen=True)
class OneOf:
    values: tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(self.values)

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) and value in self.values else f"must be {self.describe()}"


@dataclass(frozen=True)
class Text:
    max_chars: int

    def describe(self) -> str:
        return f"text of at most {self.max_chars} characters"

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str) or len(value) > self.max_chars:
            return f"must be {self.describe()}"
        return None


@dataclass(frozen=True)
class IntegerList:
    """A comma-separated string ("1,2,3", OpenAI's form) or a list of integers, each in ``item``'s range."""

    item: Integer
    max_items: int

    def describe(self) -> str:
        return f'at most {self.max_items} integers in {self.item.describe()}, as "a,b,c" or a list'

    def problem(self, value: Any) -> str | None:
        if isinstance(value, str) and len(value) > 16 * self.max_items:
            return f"must be {self.describe()}"
        try:
            items = parse_int_list(value)
        except ValueError:
            return f"must be {self.describe()}"
        if len(items) > self.max_items:
            return f"has {len(items)} items; it must be {self.describe()}"
        for item in items:
            if self.item.problem(item):
                return f"holds {item}, out of range {self.item.describe()}"
        return None


def parse_int_list(value: Any) -> tuple[int, ...]:
    """The integers of a comma-separated string or a list; ValueError for anything else."""
    if isinstance(value, str):
        parts: list[Any] = [p.strip() for p in value.split(",") if p.strip()]
        if not all(p.lstrip("-").isdigit() for p in parts):
            raise ValueError(f"not a list of integers: {value!r}")
        return tuple(int(p) for p in parts)
    if isinstance(value, (list, tuple)) and all(_is_integer(v) for v in value):
        return tuple(value)
    raise ValueError(f"not a list of integers: {value!r}")


# The tokenizers a model can be built for, and the vocabulary size (token embedding rows) of each.
VOCAB_SIZES = {"gpt2": 50257, "clip": 49408}

LEVELS = 8  # channel_mult entries: image_size = 2 ** (levels + 2), so up to 1024 px
MAX_WIDTH = 512 * 8  # num_channels times the largest channel multiplier

# Every model option, its type and accepted values. GLIDE's released models use the values in
# finetune.model.options.BASE_DEFAULTS / UPSAMPLER_OVERRIDES, well inside these ranges.
OPTION_LIMITS: dict[str, Any] = {
    "image_size": Integer(8, 1024),
    "num_channels": Integer(1, 512),
    "num_res_blocks": Integer(1, 8),
    "channel_mult": IntegerList(Integer(1, 8), LEVELS),  # "" picks GLIDE's multipliers for the image size
    "num_heads": Integer(1, 64),
    "num_head_channels": Integer(1, MAX_WIDTH, sentinels=(-1,)),  # -1: heads from num_heads
    "num_heads_upsample": Integer(1, 64, sentinels=(-1,)),  # -1: same as num_heads
    "attention_resolutions": IntegerList(Integer(1, 1024), 2 * LEVELS),
    "dropout": Number(0.0, 1.0),
    "text_ctx": Integer(1, 1024),
    "xf_width": Integer(0, 4096),  # 0: no text transformer
    "xf_layers": Integer(0, 64),
    "xf_heads": Integer(1, 64),
    "xf_final_ln": Flag(),
    "xf_padding": Flag(),
    "diffusion_steps": Integer(1, 10_000),
    "noise_schedule": OneOf(NOISE_SCHEDULES),
    "timestep_respacing": Text(256),
    "use_scale_shift_norm": Flag(),
    "resblock_updown": Flag(),
    "use_fp16": Flag(),
    "cache_text_emb": Flag(),
    "inpaint": Flag(),
    "super_res": Flag(),
    "coord_channels": Flag(),
    "tokenizer": OneOf(tuple(VOCAB_SIZES)),
    "token_rows": Integer(2, max(VOCAB_SIZES.values()), sentinels=(0,)),  # 0: the tokenizer's whole vocabulary
}


def show_value(value: Any) -> str:
    """A value as it would appear in JSON (null, true, NaN, "text"), cut to a readable length."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_option(name: str, value: Any, label: str | None = None) -> None:
    """Raise OptionError '<label>=<value> <problem>' if `value` is not an accepted value of option `name`."""
    problem = OPTION_LIMITS[name].problem(value)
    if problem:
        raise OptionError(f"{label or 'options.' + name}={show_value(value)} {problem}")


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse unknown option names, then check each given value against OPTION_LIMITS."""
    unknown = sorted(str(k) for k in options if k not in OPTION_LIMITS)
    if unknown:
        raise OptionError(f"unknown model option(s): {', '.join(unknown)}; known options: {', '.join(OPTION_LIMITS)}")
    for name, value in options.items():
        check_option(name, value)
