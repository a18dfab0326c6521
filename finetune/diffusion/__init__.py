"""GLIDE's Gaussian diffusion (schedules, respacing, reverse steps, hybrid loss), its samplers
(``finetune.diffusion.samplers``) and classifier-free guidance (``finetune.diffusion.guidance``)."""
from .gaussian_diffusion import GaussianDiffusion, build_diffusion, diffusion_from_options
from .schedules import NOISE_SCHEDULES, get_named_beta_schedule, space_timesteps

__all__ = [
    "GaussianDiffusion",
    "build_diffusion",
    "diffusion_from_options",
    "NOISE_SCHEDULES",
    "get_named_beta_schedule",
    "space_timesteps",
]
