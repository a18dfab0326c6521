"""GLIDE's Gaussian diffusion (schedules, respacing, reverse steps, hybrid loss), its samplers
(``finetune.diffusion.samplers``) and classifier-free guidance (``finetune.diffusion.guidance``)."""

from .gaussian_diffusion import GaussianDiffusion, build_diffusion, diffusion_from_options
from .guidance import classifier_free_guidance, cond_uncond_kwargs
from .samplers import DEFAULT_STEPS, SAMPLERS, force_known_pixels, sample
from .schedules import NOISE_SCHEDULES, get_named_beta_schedule, space_timesteps

__all__ = [
    "DEFAULT_STEPS",
    "GaussianDiffusion",
    "NOISE_SCHEDULES",
    "SAMPLERS",
    "build_diffusion",
    "classifier_free_guidance",
    "cond_uncond_kwargs",
    "diffusion_from_options",
    "force_known_pixels",
    "get_named_beta_schedule",
    "sample",
    "space_timesteps",
]
