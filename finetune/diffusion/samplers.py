"""Sampling loops over a ``GaussianDiffusion``: GLIDE's ancestral sampler, DDIM, and DPM-Solver++(2M).

Every sampler takes a plain ``model_fn(x, t, **model_kwargs) -> [B, 2C, H, W]`` (eps then variance
values; ``t`` holds ORIGINAL timesteps), e.g. a model or ``guidance.classifier_free_guidance(...)``.

Common keyword arguments:
- ``noise``: the starting noise x_T (shape ``shape``); otherwise drawn from ``generator``.
- ``generator``: a ``torch.Generator`` for the whole batch, or a list with one per image so each
  image depends only on its own seed (also used for the per-step noise of ancestral / DDIM eta>0).
  Noise is drawn on the generator's device and moved, so a seed gives the same image on any device.
- ``temperature``: scales only the starting noise x_T (GLIDE's upsampler uses 0.997).
- ``start_image`` and ``start_step`` (ancestral and DDIM): begin the reverse process part-way, at the last
  step whose original timestep is at most ``start_step``, from ``start_image`` noised to that level (SDEdit).
  An upsampler started from its upsampled low-res input takes the picture's colours and layout from it instead
  of deciding them at high noise, where a briefly trained one gets them wrong; the noise scaled by
  ``temperature`` is the same draw as x_T would be.
- ``clip_denoised``: clamp every predicted x_0 to [-1, 1].
- ``denoised_fn``: edits every predicted x_0 before clipping; ``force_known_pixels`` builds the
  inpainting one (GLIDE's method: the prediction is overwritten with the known pixels each step).
- ``progress``: a tqdm bar; ``callback(step, total, x, pred_xstart)`` after every step.
- ``steer``: ``steer(t, pred_xstart)`` after every step but the last (``t``: the step's original timestep) returns
  None or, per image, where each pixel comes from (``[B, H*W]`` flat source indices: a permutation such as a roll);
  the pixels of every image of the sampler's state are then rearranged so. The model is (nearly)
  translation-equivariant, so moving what it is drawing, noise and all, does not change it (see sampling.placement).

Defaults (sampler and steps per sampler) come from ``finetune.diffusion.defaults``, the one table every caller
reads: DPM-Solver++(2M) SDE with 30 model calls; ancestral ``"100"`` (GLIDE's base respacing); DDIM ``"fast27"``
(GLIDE's upsampler setting; ``"ddim25"`` and any other spec work too); DPM-Solver++(2M) with 20 model calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import defaults
from .gaussian_diffusion import GaussianDiffusion, build_diffusion

SAMPLERS = ("ancestral", "ddim", "dpmpp_2m", "dpmpp_2m_sde")
DEFAULT_STEPS = defaults.STEPS
STEP_COUNT_SAMPLERS = ("dpmpp_2m", "dpmpp_2m_sde")  # their steps are a number of model calls, not a respacing

ModelFn = Callable[..., torch.Tensor]
GeneratorArg = torch.Generator | Sequence[torch.Generator] | None
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
Steer = Callable[[int, torch.Tensor], torch.Tensor | None]


def sample(
    diffusion: GaussianDiffusion | None,
    model_fn: ModelFn,
    shape: Sequence[int],
    *,
    sampler: str = defaults.SAMPLER,
    steps: int | str | None = None,
    eta: float = 0.0,
    **kwargs,
) -> torch.Tensor:
    """Draw a batch of images with one of ``SAMPLERS``.

    ``diffusion``: the model's full process (``None``: GLIDE's 1000-step cosine one).
    ``steps``: for ``ancestral``/``ddim`` a respacing spec (an int N means ``"N"``); for
    ``dpmpp_2m``/``dpmpp_2m_sde`` the number of model calls. ``None`` takes ``DEFAULT_STEPS[sampler]``.
    ``eta`` applies to DDIM only. Other keyword arguments: see the module docstring.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if steps is None:
        steps = DEFAULT_STEPS[sampler]
    if sampler == "ancestral":
        return sample_ancestral(diffusion, model_fn, shape, respacing=steps, **kwargs)
    if sampler == "ddim":
        return sample_ddim(diffusion, model_fn, shape, respacing=steps, eta=eta, **kwargs)
    if any(kwargs.pop(k, None) is not None for k in ("start_image", "start_step")):
        raise ValueError(f"{sampler} cannot start part-way (start_image/start_step); use ancestral or ddim")
    if isinstance(steps, str):
        if not steps.strip().isdigit():
            raise ValueError(f"{sampler} takes a number of steps, got {steps!r}")
        steps = int(steps)
    return sample_dpmpp_2m(diffusion, model_fn, shape, steps=steps, stochastic=sampler == "dpmpp_2m_sde", **kwargs)


def sample_ancestral(
    diffusion: GaussianDiffusion | None,
    model_fn: ModelFn,
    shape: Sequence[int],
    *,
    respacing: int | str = "100",
    model_kwargs: dict | None = None,
    noise: torch.Tensor | None = None,
    generator: GeneratorArg = None,
    temperature: float = 1.0,
    start_image: torch.Tensor | None = None,
    start_step: int | None = None,
    clip_denoised: bool = True,
    denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callback | None = None,
    steer: Steer | None = None,
) -> torch.Tensor:
    """GLIDE's sampler: x_{t-1} ~ p(x_{t-1} | x_t) with the learned variance, over the process
    respaced by ``respacing``; the last step adds no noise."""
    process = _process(diffusion).respace(respacing)
    draw = _NoiseDrawer(shape, generator, _pick_device(device, noise, model_fn, model_kwargs))
    x, total = _starting_point(process, draw.initial(noise, temperature), start_image, start_step)
    with torch.no_grad():
        for step, i in enumerate(_progress(range(total - 1, -1, -1), progress, "ancestral")):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            step_noise = draw.normal() if i > 0 else torch.zeros_like(x)
            out = process.p_sample(
                model_fn,
                x,
                t,
                noise=step_noise,
                clip_denoised=clip_denoised,
                denoised_fn=denoised_fn,
                model_kwargs=model_kwargs,
            )
            x = out["sample"]
            if steer is not None and i > 0:
                x = move_pixels(x, steer(int(process.timestep_map[i]), out["pred_xstart"]))
            if callback is not None:
                callback(step, total, x, out["pred_xstart"])
    return x


def sample_ddim(
    diffusion: GaussianDiffusion | None,
    model_fn: ModelFn,
    shape: Sequence[int],
    *,
    respacing: int | str = "fast27",
    eta: float = 0.0,
    model_kwargs: dict | None = None,
    noise: torch.Tensor | None = None,
    generator: GeneratorArg = None,
    temperature: float = 1.0,
    start_image: torch.Tensor | None = None,
    start_step: int | None = None,
    clip_denoised: bool = True,
    denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callback | None = None,
    steer: Steer | None = None,
) -> torch.Tensor:
    """DDIM over the process respaced by ``respacing``; ``eta`` = 0 is deterministic."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    process = _process(diffusion).respace(respacing)
    draw = _NoiseDrawer(shape, generator, _pick_device(device, noise, model_fn, model_kwargs))
    x, total = _starting_point(process, draw.initial(noise, temperature), start_image, start_step)
    with torch.no_grad():
        for step, i in enumerate(_progress(range(total - 1, -1, -1), progress, "ddim")):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            step_noise = draw.normal() if (eta > 0 and i > 0) else None
            out = process.ddim_sample(
                model_fn,
                x,
                t,
                eta=eta,
                noise=step_noise,
                clip_denoised=clip_denoised,
                denoised_fn=denoised_fn,
                model_kwargs=model_kwargs,
            )
            x = out["sample"]
            if steer is not None and i > 0:
                x = move_pixels(x, steer(int(process.timestep_map[i]), out["pred_xstart"]))
            if callback is not None:
                callback(step, total, x, out["pred_xstart"])
    return x


def dpm_solver_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """The ``steps`` process indices DPM-Solver++ calls the model at, noisiest first.

    Quadratic in time (DPM-Solver's "time_quadratic"): index (T-1)(1 - k/steps)^2, so steps are
    dense at low noise, where the cosine schedule's fine detail is decided; on a closed-form
    mixture-of-Gaussians benchmark (bench/diffusion_samplers.py) this beat a uniform grid ~8x at
    20 steps. Indices are kept strictly decreasing; the update after the last one jumps to the
    clean image.
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"dpmpp_2m steps must be between 1 and {num_timesteps}, got {steps}")
    grid, previous = [], num_timesteps
    for k in range(steps):
        index = round((num_timesteps - 1) * (1.0 - k / steps) ** 2)
        index = max(min(index, previous - 1), steps - 1 - k)  # strictly decreasing, room for the rest
        grid.append(index)
        previous = index
    return grid


def sample_dpmpp_2m(
    diffusion: GaussianDiffusion | None,
    model_fn: ModelFn,
    shape: Sequence[int],
    *,
    steps: int = 20,
    timesteps: Sequence[int] | None = None,
    model_kwargs: dict | None = None,
    noise: torch.Tensor | None = None,
    generator: GeneratorArg = None,
    temperature: float = 1.0,
    clip_denoised: bool = True,
    denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callback | None = None,
    stochastic: bool = False,
    steer: Steer | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): a deterministic second-order multistep solver of the
    probability-flow ODE in data prediction, on the discrete schedule of ``diffusion``.

    With alpha_i = sqrt(alpha_bar_i), sigma_i = sqrt(1 - alpha_bar_i), lambda = log(alpha/sigma)
    and D the predicted x_0 (after ``denoised_fn`` and clipping), each step is
    x <- (sigma_next/sigma) x - alpha_next (exp(-h) - 1) D', h = lambda_next - lambda, where
    D' = D on the first step and (1 + 1/2r) D - 1/2r D_prev after it (r = h_prev / h).
    With ``stochastic`` (the SDE variant, sampler ``dpmpp_2m_sde``) each step is instead
    x <- (sigma_next/sigma) e^-h x - alpha_next (exp(-2h) - 1) D' + sigma_next sqrt(1 - exp(-2h)) z:
    fresh noise at every step, like ancestral sampling, corrects errors of an imperfect model
    that the deterministic solver carries to the end (seen as leftover noise).
    The final step goes to the clean image (sigma = 0), which leaves x = D. ``steps`` model calls at
    ``dpm_solver_timesteps`` unless explicit decreasing process ``timesteps`` are given.
    """
    process = _process(diffusion)
    grid = _solver_grid(process.num_timesteps, steps, timesteps)
    alpha = np.sqrt(process.alphas_cumprod[grid])
    sigma = np.sqrt(1.0 - process.alphas_cumprod[grid])
    lam = np.log(alpha) - np.log(sigma)

    draw = _NoiseDrawer(shape, generator, _pick_device(device, noise, model_fn, model_kwargs))
    x = draw.initial(noise, temperature)
    total = len(grid)
    previous_x0, previous_h = None, None
    with torch.no_grad():
        for k in _progress(range(total), progress, "dpmpp_2m"):
            t = torch.full((x.shape[0],), grid[k], dtype=torch.long, device=x.device)
            x0 = process.p_mean_variance(
                model_fn, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn, model_kwargs=model_kwargs
            )["pred_xstart"]
            if k == total - 1:
                x = x0
            else:
                h = float(lam[k + 1] - lam[k])
                if previous_x0 is None:
                    d = x0
                else:
                    half_inv_r = 0.5 * h / previous_h
                    d = (1.0 + half_inv_r) * x0 - half_inv_r * previous_x0
                noise_now = draw.normal() if stochastic else None
                x = _dpmpp_2m_step(x, d, h, sigma[k], sigma[k + 1], alpha[k + 1], noise_now)
                previous_x0, previous_h = x0, h
                if steer is not None:
                    sources = steer(grid[k], x0)
                    x, previous_x0 = move_pixels(x, sources), move_pixels(x0, sources)
            if callback is not None:
                callback(k, total, x, x0)
    return x


def force_known_pixels(known_image: torch.Tensor, known_mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``denoised_fn`` for inpainting: where ``known_mask`` is 1 the predicted x_0 becomes
    ``known_image`` (both broadcastable to the batch, image in [-1, 1])."""

    def denoised_fn(pred_xstart: torch.Tensor) -> torch.Tensor:
        mask = known_mask.to(device=pred_xstart.device, dtype=pred_xstart.dtype)
        image = known_image.to(device=pred_xstart.device, dtype=pred_xstart.dtype)
        return pred_xstart * (1 - mask) + image * mask

    return denoised_fn


def move_pixels(x: torch.Tensor, sources: torch.Tensor | None) -> torch.Tensor:
    """`x` [B, C, H, W] with each image's pixels rearranged: pixel p (row-major) of image b takes the old pixel
    `sources[b, p]` (`sources` [B, H*W]); None: `x`."""
    if sources is None:
        return x
    b, c, h, w = x.shape
    if tuple(sources.shape) != (b, h * w):
        raise ValueError(
            f"steer must return one source index per pixel, shape ({b}, {h * w}); got {tuple(sources.shape)}"
        )
    index = sources.to(device=x.device, dtype=torch.long).unsqueeze(1).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, index).reshape(b, c, h, w)


class _NoiseDrawer:
    """Standard normal draws for a batch: per-image generators, one generator, or the global RNG."""

    def __init__(self, shape: Sequence[int], generator: GeneratorArg, device: torch.device):
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) < 2:
            raise ValueError(f"shape must be (batch, channels, ...), got {self.shape}")
        self.device = device
        if isinstance(generator, (list, tuple)):
            if len(generator) != self.shape[0]:
                raise ValueError(f"got {len(generator)} generators for a batch of {self.shape[0]}")
            if not all(isinstance(g, torch.Generator) for g in generator):
                raise TypeError("generator list must hold torch.Generator objects")
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
        self.generator = generator
        self.dtype = torch.float32  # becomes the starting noise's dtype once that is known

    def normal(self) -> torch.Tensor:
        g = self.generator
        if g is None:
            return torch.randn(self.shape, device=self.device, dtype=self.dtype)
        if isinstance(g, torch.Generator):
            return torch.randn(self.shape, generator=g, device=g.device, dtype=self.dtype).to(self.device)
        per_image = [torch.randn(self.shape[1:], generator=gi, device=gi.device, dtype=self.dtype) for gi in g]
        return torch.stack(per_image).to(self.device)

    def initial(self, noise: torch.Tensor | None, temperature: float) -> torch.Tensor:
        if noise is None:
            noise = self.normal()
        elif tuple(noise.shape) != self.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != requested shape {self.shape}")
        x = noise.to(self.device)
        if not x.is_floating_point():
            raise TypeError("noise must be a floating point tensor")
        self.dtype = x.dtype
        return x * temperature if temperature != 1.0 else x


def _starting_point(
    process: GaussianDiffusion, noise: torch.Tensor, start_image: torch.Tensor | None, start_step: int | None
) -> tuple[torch.Tensor, int]:
    """(x at the first step, number of steps to run): pure noise over the whole process, or `start_image`
    noised to the last step whose original timestep is at most `start_step`."""
    if start_image is None and start_step is None:
        return noise, process.num_timesteps
    if start_image is None or start_step is None:
        raise ValueError("start_image and start_step go together")
    if tuple(start_image.shape) != tuple(noise.shape):
        raise ValueError(f"start_image shape {tuple(start_image.shape)} != sample shape {tuple(noise.shape)}")
    total = int(np.searchsorted(process.timestep_map, int(start_step), side="right"))
    if total < 1:
        raise ValueError(f"start_step {start_step} is before the process's first step ({int(process.timestep_map[0])})")
    alpha_bar = float(process.alphas_cumprod[total - 1])
    start = start_image.to(device=noise.device, dtype=noise.dtype)
    return math.sqrt(alpha_bar) * start + math.sqrt(1.0 - alpha_bar) * noise, total


def _process(diffusion: GaussianDiffusion | None) -> GaussianDiffusion:
    if diffusion is None:
        return build_diffusion()
    if not isinstance(diffusion, GaussianDiffusion):
        raise TypeError(f"diffusion must be a GaussianDiffusion (see build_diffusion), got {type(diffusion).__name__}")
    return diffusion


def _pick_device(device, noise, model_fn, model_kwargs) -> torch.device:
    """Explicit device, else the noise's, else the model's parameters', else a kwarg tensor's, else CPU."""
    if device is not None:
        return torch.device(device)
    if noise is not None:
        return noise.device
    parameters = getattr(model_fn, "parameters", None)
    if callable(parameters):
        for p in parameters():
            return p.device
    for value in (model_kwargs or {}).values():
        if isinstance(value, torch.Tensor):
            return value.device
    return torch.device("cpu")


def _progress(iterable, enabled: bool, name: str):
    return tqdm(iterable, desc=name, unit="step", leave=False) if enabled else iterable


def _solver_grid(num_timesteps: int, steps: int, timesteps: Sequence[int] | None) -> list[int]:
    """The process indices a solver visits: `dpm_solver_timesteps`, or the given strictly decreasing ones."""
    if timesteps is None:
        return dpm_solver_timesteps(num_timesteps, int(steps))
    grid = [int(i) for i in timesteps]
    if not grid or any(a <= b for a, b in zip(grid, grid[1:])) or grid[-1] < 0 or grid[0] >= num_timesteps:
        raise ValueError("timesteps must be strictly decreasing process indices")
    return grid


def _dpmpp_2m_step(x, d, h: float, sigma_now, sigma_next, alpha_next, noise: torch.Tensor | None) -> torch.Tensor:
    """One DPM-Solver++(2M) step of size h in lambda towards the data estimate d; with `noise`, the SDE variant."""
    if noise is not None:
        return (
            float(sigma_next / sigma_now * math.exp(-h)) * x
            - float(alpha_next * math.expm1(-2.0 * h)) * d
            + float(sigma_next * math.sqrt(-math.expm1(-2.0 * h))) * noise
        )
    return float(sigma_next / sigma_now) * x - float(alpha_next * math.expm1(-h)) * d
