"""The sampling defaults, in one table.

Everything that samples without being told how reads its defaults from here: the model core's `sample()`, the
trainer's sample grids, `python -m sampling generate/comic/inpaint`, the studio's Generate tab, the quickstart and
the quality bench (`tests/sampling/test_defaults_single_source.py` checks that none of them re-declares a value).
It lives in the model core because `finetune` never imports `sampling`; `sampling.settings` builds its
`SamplerSettings` defaults from it.
"""

from __future__ import annotations

# The base model. DPM-Solver++(2M) with fresh noise per step stays within a few points of ancestral 100 on the
# bundled base at 30 model calls (docs/quality/README.md); guidance 3 suits OpenAI's GLIDE weights.
SAMPLER = "dpmpp_2m_sde"
GUIDANCE = 3.0
# Steps when none are given: a respacing spec for ancestral/ddim (GLIDE's "100" base and "fast27" upsampler
# settings), a number of model calls for the DPM-Solver++ samplers.
STEPS: dict[str, str | int] = {"ancestral": "100", "ddim": "fast27", "dpmpp_2m": 20, "dpmpp_2m_sde": 30}

# The upsampler: OpenAI's example (DDIM, no guidance, starting noise scaled by 0.997), but started half-way (t = 500)
# from the noised low-res image: the bundled upsampler gets colours wrong when it starts from pure noise (21% of
# captions right after it vs 99% before; docs/quality/README.md). 25 steps over 1000 keep 13 model calls below 500.
UPSAMPLER_SAMPLER = "ddim"
UPSAMPLER_STEPS = "25"
UPSAMPLER_START_STEP = 500
UPSAMPLER_GUIDANCE: float | None = None
UPSAMPLER_TEMPERATURE = 0.997
