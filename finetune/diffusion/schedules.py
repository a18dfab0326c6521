"""Noise schedules (betas) and timestep respacing specs, as plain numpy/python data.

Both follow OpenAI's GLIDE / improved-diffusion definitions exactly, so released checkpoints
sample as they were trained.
"""

from __future__ import annotations

import math

import numpy as np

NOISE_SCHEDULES = ("squaredcos_cap_v2", "linear")

# GLIDE's named spec: the sections "10,10,3,2,2" with the very last (noisiest) step moved two
# steps earlier, which avoids DDIM artifacts at the noisiest timestep.
_FAST27_SECTIONS = "10,10,3,2,2"


def get_named_beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """Betas (float64, length ``num_steps``) of a named schedule."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if name == "linear":
        # Ho et al.'s 1e-4 .. 0.02 over 1000 steps, stretched for other step counts.
        scale = 1000.0 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if name == "squaredcos_cap_v2":
        return betas_from_alpha_bar(num_steps, lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise ValueError(f"unknown noise schedule {name!r}; known: {', '.join(NOISE_SCHEDULES)}")


def betas_from_alpha_bar(num_steps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    """Discretise a continuous cumulative signal fraction ``alpha_bar(s)``, s in [0, 1], into betas.

    beta_i = 1 - alpha_bar((i+1)/n) / alpha_bar(i/n), capped at ``max_beta`` so the last step
    (where alpha_bar reaches 0) stays finite.
    """
    edges = [alpha_bar(i / num_steps) for i in range(num_steps + 1)]
    return np.array([min(1.0 - edges[i + 1] / edges[i], max_beta) for i in range(num_steps)], dtype=np.float64)


def space_timesteps(num_steps: int, spec: str | int | list[int] | tuple[int, ...]) -> list[int]:
    """The sorted original timesteps a respaced process keeps.

    ``spec`` forms (GLIDE's semantics):
      - ``""`` or ``None``: every step.
      - ``"N"`` / int ``N``: N steps evenly spread over the whole process, first and last included.
      - ``"a,b,c"`` or a list: the process cut into len(list) equal sections, section i evenly
        strided into that many steps (the first sections get the remainder steps).
      - ``"ddimN"``: ``range(0, num_steps, stride)`` for the integer stride giving exactly N steps.
      - ``"fast27"``: ``"10,10,3,2,2"`` with step ``num_steps - 1`` replaced by ``num_steps - 3``.
    """
    if spec is None or spec == "":
        return list(range(num_steps))
    if isinstance(spec, int):
        counts = [spec]
    elif isinstance(spec, str):
        text = spec.strip()
        if text == "fast27":
            kept = set(space_timesteps(num_steps, _FAST27_SECTIONS))
            kept.discard(num_steps - 1)
            kept.add(num_steps - 3)
            return sorted(kept)
        if text.startswith("ddim"):
            return _ddim_strided(num_steps, _parse_int(text[4:], spec))
        counts = [_parse_int(part, spec) for part in text.split(",")]
    else:
        counts = [int(c) for c in spec]
    return _sectioned(num_steps, counts, spec)


def _parse_int(text: str, spec) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"bad timestep respacing {spec!r}: expected '', 'N', 'a,b,c', 'ddimN' or 'fast27'") from None


def _ddim_strided(num_steps: int, count: int) -> list[int]:
    if count < 1:
        raise ValueError(f"ddim respacing needs at least 1 step, got {count}")
    for stride in range(1, num_steps):
        if len(range(0, num_steps, stride)) == count:
            return list(range(0, num_steps, stride))
    raise ValueError(f"no integer stride gives exactly {count} of {num_steps} steps (ddim{count})")


def _sectioned(num_steps: int, counts: list[int], spec) -> list[int]:
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"bad timestep respacing {spec!r}: every section needs at least 1 step")
    base, remainder = divmod(num_steps, len(counts))
    kept: set[int] = set()
    start = 0
    for i, count in enumerate(counts):
        size = base + (1 if i < remainder else 0)
        if count > size:
            raise ValueError(f"bad timestep respacing {spec!r}: a section of {size} steps cannot hold {count}")
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        # Accumulate the fractional position like the reference does (repeated addition, then
        # round half to even) so the kept steps match it exactly.
        position = 0.0
        for _ in range(count):
            kept.add(start + round(position))
            position += stride
        start += size
    return sorted(kept)
