"""Checking what users type: captions split into panels, numbers clamped into range with a message."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from finetune.diffusion import defaults
from finetune.diffusion.samplers import SAMPLERS as ALL_SAMPLERS

from ..settings import MAX_GUIDANCE, SamplerSettings
from .catalogue import clean_caption
from .catalogue.errors import InvalidInput

MIN_PANELS, MAX_PANELS = 2, 8
MAX_PANEL_CHARS = 300
SAMPLERS = (defaults.SAMPLER, *(name for name in ALL_SAMPLERS if name != defaults.SAMPLER))  # the default first


def step_count(spec: str | int) -> int:
    """Model calls of a steps value from the defaults table: 30 -> 30, "100" -> 100, "fast27" -> 27."""
    if isinstance(spec, int):
        return spec
    return sum(int(part.removeprefix("fast").removeprefix("ddim")) for part in spec.split(","))


def steps_spec(default_spec: str | int, count: int) -> str | int:
    """The steps the form's number stands for: the table's own spec (e.g. "fast27") when the number is its count,
    else the number itself (an even respacing for ancestral/ddim)."""
    return default_spec if count == step_count(default_spec) else count


# The form holds numbers: each sampler's default from the one table, as a count of model calls.
DEFAULT_STEPS = {name: step_count(defaults.STEPS[name]) for name in SAMPLERS}
DEFAULT_UPSAMPLE_STEPS = step_count(defaults.UPSAMPLER_STEPS)
FORM_LIMITS = {
    "guidance": (0.0, MAX_GUIDANCE),
    "steps": (1, 1000),
    "seed": (0, 2**31 - 1),
    "upsample_steps": (1, 1000),
}


@dataclass(frozen=True)
class GenerateSettings:
    guidance: float = defaults.GUIDANCE
    steps: int = DEFAULT_STEPS[defaults.SAMPLER]
    sampler: str = defaults.SAMPLER
    seed: int = 0
    upsample: bool = False
    upsample_steps: int = DEFAULT_UPSAMPLE_STEPS
    placement: bool = SamplerSettings.placement  # subjects go where their captions say (sampling.placement)

    def to_dict(self) -> dict:
        return asdict(self)


def split_captions(text: str) -> tuple[list[str], list[str]]:
    """One caption per non-empty line → (captions, messages). Over-long ones are cut with a message."""
    if text is None or not str(text).strip():
        raise InvalidInput(f"write {MIN_PANELS} or more captions, one per line")
    captions, messages = [], []
    for number, line in enumerate(str(text).splitlines(), 1):
        if not line.strip():
            continue
        try:
            captions.append(clean_caption(line, limit=MAX_PANEL_CHARS))
        except InvalidInput:
            cut = clean_caption(line, limit=10**9)[:MAX_PANEL_CHARS].rstrip()
            messages.append(f"caption on line {number} was longer than {MAX_PANEL_CHARS} characters and was cut")
            captions.append(cut)
    if len(captions) < MIN_PANELS:
        raise InvalidInput(f"a strip needs at least {MIN_PANELS} captions (one per line); got {len(captions)}")
    if len(captions) > MAX_PANELS:
        messages.append(f"only the first {MAX_PANELS} of {len(captions)} captions are drawn")
        captions = captions[:MAX_PANELS]
    return captions, messages


def _number(value, name: str, kind, messages: list[str], default):
    low, high = FORM_LIMITS[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        messages.append(f"{name} {value!r} is not a number; using {default}")
        return default
    if math.isnan(number):
        messages.append(f"{name} is not a number; using {default}")
        return default
    clamped = min(max(number, low), high)
    if clamped != number:
        messages.append(f"{name} {value} is outside {low}–{high}; using {kind(clamped)}")
    return kind(round(clamped)) if kind is int else kind(clamped)


def clamp_settings(
    guidance, steps, sampler, seed, upsample=False, upsample_steps=DEFAULT_UPSAMPLE_STEPS, placement=True
) -> tuple[GenerateSettings, list[str]]:
    """Turn raw form values into settings the sampler accepts, saying what was changed."""
    messages: list[str] = []
    if sampler not in SAMPLERS:
        messages.append(f"unknown sampler {sampler!r}; using {SAMPLERS[0]}")
        sampler = SAMPLERS[0]
    if seed is None or (isinstance(seed, str) and not seed.strip()) or (isinstance(seed, (int, float)) and seed < 0):
        seed = random.SystemRandom().randint(*FORM_LIMITS["seed"])
    settings = GenerateSettings(
        guidance=_number(guidance, "guidance", float, messages, defaults.GUIDANCE),
        steps=_number(steps, "steps", int, messages, DEFAULT_STEPS[sampler]),
        sampler=sampler,
        seed=_number(seed, "seed", int, messages, 0),
        upsample=bool(upsample),
        upsample_steps=_number(upsample_steps, "upsample_steps", int, messages, DEFAULT_UPSAMPLE_STEPS),
        placement=bool(placement),
    )
    return settings, messages
