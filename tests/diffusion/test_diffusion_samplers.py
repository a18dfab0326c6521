"""Samplers against closed forms: for Gaussian data the exact eps is affine in x_t, so every
sampler's output is affine in its noise and its mean and variance follow from a scalar recurrence
written here from the samplers' defining formulas (clipping off, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from finetune.diffusion import build_diffusion, space_timesteps
from finetune.diffusion.samplers import (
    dpm_solver_timesteps,
    force_known_pixels,
    sample,
    sample_ancestral,
    sample_ddim,
    sample_dpmpp_2m,
)

SHAPE_ONE = (1, 3, 4, 4)


def _x0_affine(oracle, timestep: int):
    """Predicted x0 = alpha * x + beta at an original timestep."""
    a2 = float(oracle.base.alphas_cumprod[timestep])
    a, s = math.sqrt(a2), math.sqrt(1.0 - a2)
    p, q = oracle.coefficients(timestep)
    return (1.0 - s * p) / a, -s * q / a


def ancestral_moments(oracle, kept: list[int], temperature: float = 1.0):
    """Per-pixel mean and variance of GLIDE's ancestral sampler over the kept original steps."""
    ac = oracle.base.alphas_cumprod[kept]
    mean, var = torch.zeros_like(oracle.mu), torch.full_like(oracle.mu, temperature**2)
    frac = (oracle.v + 1) / 2
    for i in reversed(range(len(kept))):
        ac_prev = ac[i - 1] if i > 0 else 1.0
        beta = 1.0 - ac[i] / ac_prev
        x0_a, x0_b = _x0_affine(oracle, kept[i])
        c1 = beta * math.sqrt(ac_prev) / (1.0 - ac[i])
        c2 = (1.0 - ac_prev) * math.sqrt(1.0 - beta) / (1.0 - ac[i])
        gain = c1 * x0_a + c2
        mean, var = gain * mean + c1 * x0_b, gain**2 * var
        if i > 0:
            posterior = beta * (1.0 - ac_prev) / (1.0 - ac[i])
            var = var + math.exp(frac * math.log(beta) + (1 - frac) * math.log(posterior))
    return mean, var


def ddim_moments(oracle, kept: list[int], eta: float, temperature: float = 1.0):
    ac = oracle.base.alphas_cumprod[kept]
    mean, var = torch.zeros_like(oracle.mu), torch.full_like(oracle.mu, temperature**2)
    for i in reversed(range(len(kept))):
        ac_prev = ac[i - 1] if i > 0 else 1.0
        sigma2 = eta**2 * (1.0 - ac_prev) / (1.0 - ac[i]) * (1.0 - ac[i] / ac_prev)
        x0_a, x0_b = _x0_affine(oracle, kept[i])
        p, q = oracle.coefficients(kept[i])
        c = math.sqrt(1.0 - ac_prev - sigma2)
        gain = math.sqrt(ac_prev) * x0_a + c * p
        mean, var = gain * mean + math.sqrt(ac_prev) * x0_b + c * q, gain**2 * var
        if i > 0:
            var = var + sigma2
    return mean, var


def dpmpp_2m_affine(oracle, grid: list[int], temperature: float = 1.0):
    """(gain, offset) with output = gain * z + offset, z the starting noise."""
    ac = oracle.base.alphas_cumprod
    x = (torch.full_like(oracle.mu, temperature), torch.zeros_like(oracle.mu))
    previous, previous_h = None, None
    for k, timestep in enumerate(grid):
        x0_a, x0_b = _x0_affine(oracle, timestep)
        d = (x0_a * x[0], x0_a * x[1] + x0_b)
        if k == len(grid) - 1:
            return d
        alpha, sigma = math.sqrt(ac[timestep]), math.sqrt(1 - ac[timestep])
        alpha_n, sigma_n = math.sqrt(ac[grid[k + 1]]), math.sqrt(1 - ac[grid[k + 1]])
        h = math.log(alpha_n / sigma_n) - math.log(alpha / sigma)
        corrected = d
        if previous is not None:
            w = h / (2 * previous_h)
            corrected = tuple((1 + w) * dv - w * pv for dv, pv in zip(d, previous))
        x = tuple(sigma_n / sigma * xv - alpha_n * math.expm1(-h) * cv for xv, cv in zip(x, corrected))
        previous, previous_h = d, h
    raise AssertionError("empty grid")


def _standardised(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return (samples - mean) / var.sqrt()


def _assert_matches_moments(samples, mean, var):
    z = _standardised(samples, mean, var)
    n = z.shape[0]
    assert abs(z.mean().item()) < 0.03, z.mean()
    assert abs(z.var().item() - 1.0) < 0.05, z.var()
    # and pixel by pixel (each pixel has its own mu and sd)
    assert z.mean(0).abs().max().item() < 4.5 / math.sqrt(n)
    assert (z.var(0) - 1).abs().max().item() < 4.5 * math.sqrt(2.0 / n)


@pytest.mark.parametrize(("respacing", "temperature"), [("10", 1.0), ("25", 1.0), ("fast27", 0.8)])
def test_ancestral_output_has_its_closed_form_moments(gaussian_oracle, respacing, temperature):
    n = 400
    out = sample_ancestral(
        gaussian_oracle.base,
        gaussian_oracle,
        (n, 3, 4, 4),
        respacing=respacing,
        clip_denoised=False,
        temperature=temperature,
        noise=torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
        generator=torch.Generator().manual_seed(1),
    )
    mean, var = ancestral_moments(gaussian_oracle, space_timesteps(1000, respacing), temperature)
    _assert_matches_moments(out, mean, var)


@pytest.mark.parametrize("respacing", ["10", "ddim25"])
def test_ddim_with_noise_has_its_closed_form_moments(gaussian_oracle, respacing):
    n = 400
    out = sample_ddim(
        gaussian_oracle.base,
        gaussian_oracle,
        (n, 3, 4, 4),
        respacing=respacing,
        eta=1.0,
        clip_denoised=False,
        noise=torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64),
        generator=torch.Generator().manual_seed(3),
    )
    mean, var = ddim_moments(gaussian_oracle, space_timesteps(1000, respacing), eta=1.0)
    _assert_matches_moments(out, mean, var)


@pytest.mark.parametrize(("respacing", "temperature"), [("10", 1.0), ("fast27", 0.997), ("50", 1.0)])
def test_deterministic_ddim_is_exactly_its_affine_map(gaussian_oracle, respacing, temperature):
    z = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = sample_ddim(
        gaussian_oracle.base,
        gaussian_oracle,
        z.shape,
        respacing=respacing,
        noise=z,
        temperature=temperature,
        clip_denoised=False,
    )
    mean, var = ddim_moments(gaussian_oracle, space_timesteps(1000, respacing), eta=0.0, temperature=temperature)
    # with eta = 0 the output is mean + sqrt(var) * z exactly
    torch.testing.assert_close(out, mean + var.sqrt() * z, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("steps", "temperature"), [(1, 1.0), (5, 1.0), (12, 0.9), (20, 1.0)])
def test_dpmpp_2m_is_exactly_its_affine_map(gaussian_oracle, steps, temperature):
    z = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = sample_dpmpp_2m(
        gaussian_oracle.base,
        gaussian_oracle,
        z.shape,
        steps=steps,
        noise=z,
        temperature=temperature,
        clip_denoised=False,
    )
    gain, offset = dpmpp_2m_affine(gaussian_oracle, dpm_solver_timesteps(1000, steps), temperature)
    torch.testing.assert_close(out, gain * z + offset, rtol=1e-9, atol=1e-9)
    # mean and variance over many noises are then offset and gain^2
    assert gaussian_oracle.seen_timesteps[0] == [dpm_solver_timesteps(1000, steps)[0]] * 8


def _w2_to_data(oracle, gain, offset) -> float:
    """RMS over pixels of the 2-Wasserstein distance between N(offset, gain^2) and N(mu, sd^2)."""
    return float((((offset - oracle.mu) ** 2 + (gain.abs() - oracle.sd) ** 2).mean()).sqrt())


def test_dpmpp_2m_in_20_steps_beats_100_ddim_steps(gaussian_oracle):
    """A solver-accuracy check with no sampling noise: distance of each sampler's exact output
    distribution to the data distribution."""
    mean, var = ddim_moments(gaussian_oracle, space_timesteps(1000, "100"), eta=0.0)
    ddim_100 = _w2_to_data(gaussian_oracle, var.sqrt(), mean)
    dpm = {
        n: _w2_to_data(gaussian_oracle, *dpmpp_2m_affine(gaussian_oracle, dpm_solver_timesteps(1000, n)))
        for n in (10, 20, 50)
    }
    assert dpm[20] < ddim_100
    assert dpm[50] < dpm[20] < dpm[10]


def test_respaced_samplers_call_the_model_with_original_timesteps(gaussian_oracle):
    z = torch.randn(SHAPE_ONE, dtype=torch.float64)
    sample_ancestral(gaussian_oracle.base, gaussian_oracle, SHAPE_ONE, respacing="fast27", noise=z)
    assert [ts[0] for ts in gaussian_oracle.seen_timesteps] == space_timesteps(1000, "fast27")[::-1]
    gaussian_oracle.seen_timesteps.clear()
    sample_ddim(build_diffusion(timestep_respacing="100"), gaussian_oracle, SHAPE_ONE, respacing="ddim25", noise=z)
    # respacing an already respaced process composes the maps
    assert [ts[0] for ts in gaussian_oracle.seen_timesteps] == [
        space_timesteps(1000, "100")[i] for i in space_timesteps(100, "ddim25")
    ][::-1]


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmpp_2m"])
def test_seeds_are_reproducible_and_per_image(gaussian_oracle, sampler):
    steps = {"ancestral": "10", "ddim": "10", "dpmpp_2m": 6}[sampler]
    shape = (3, 3, 4, 4)

    def run(seeds, shape=shape):
        return sample(
            gaussian_oracle.base,
            gaussian_oracle,
            shape,
            sampler=sampler,
            steps=steps,
            eta=0.5,
            generator=[torch.Generator().manual_seed(s) for s in seeds],
        )

    first, again = run([7, 8, 9]), run([7, 8, 9])
    assert torch.equal(first, again)
    # an image depends only on its own seed, not on its batch neighbours
    alone = run([8], shape=(1, 3, 4, 4))
    torch.testing.assert_close(first[1:2], alone, rtol=0, atol=1e-6)
    assert not torch.allclose(first[0], first[1])


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmpp_2m"])
def test_known_pixel_hook_keeps_known_pixels(gaussian_oracle, sampler):
    steps = {"ancestral": "25", "ddim": "fast27", "dpmpp_2m": 10}[sampler]
    gen = torch.Generator().manual_seed(11)
    known = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    mask[..., :2, :] = 1  # top half known
    out = sample(
        gaussian_oracle.base,
        gaussian_oracle,
        (2, 3, 4, 4),
        sampler=sampler,
        steps=steps,
        generator=gen,
        denoised_fn=force_known_pixels(known, mask),
    )
    keep = mask.expand_as(out).bool()
    assert out.dtype == torch.float32  # drawn noise is float32
    torch.testing.assert_close(out[keep].double(), known[keep], rtol=0, atol=1e-6)
    assert (out[~keep] - known[~keep]).abs().max() > 0.05
    assert out.abs().max() <= 1.0 + 1e-9  # clipping on by default


def test_temperature_scales_only_the_starting_noise(gaussian_oracle):
    z = torch.randn(SHAPE_ONE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    scaled = sample_dpmpp_2m(
        gaussian_oracle.base, gaussian_oracle, SHAPE_ONE, steps=4, noise=z, temperature=0.5, clip_denoised=False
    )
    manual = sample_dpmpp_2m(
        gaussian_oracle.base, gaussian_oracle, SHAPE_ONE, steps=4, noise=0.5 * z, clip_denoised=False
    )
    torch.testing.assert_close(scaled, manual, rtol=0, atol=1e-12)


def test_progress_and_callback_report_every_step(gaussian_oracle):
    calls = []
    sample(
        gaussian_oracle.base,
        gaussian_oracle,
        SHAPE_ONE,
        sampler="dpmpp_2m",
        steps=5,
        progress=True,
        callback=lambda step, total, x, x0: calls.append((step, total, tuple(x.shape), tuple(x0.shape))),
    )
    assert calls == [(k, 5, SHAPE_ONE, SHAPE_ONE) for k in range(5)]


def test_dpm_solver_grid_is_strictly_decreasing_for_any_step_count():
    for t_count, steps in [(1000, 1), (1000, 20), (1000, 999), (1000, 1000), (27, 27), (50, 7)]:
        grid = dpm_solver_timesteps(t_count, steps)
        assert len(grid) == steps and grid[0] == t_count - 1 and grid[-1] >= 0
        assert all(a > b for a, b in zip(grid, grid[1:]))
    assert np.all(np.diff(dpm_solver_timesteps(1000, 20)) < 0)


def _knows_x0(process, x0: torch.Tensor, seen: list):
    """A model whose every prediction of x0 is `x0` (eps from x_t at the ORIGINAL timestep it is called with)."""

    def model_fn(x, t):
        seen.append(int(t[0]))
        ab = float(process.alphas_cumprod[int(t[0])])
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    return model_fn


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_partway_start_runs_only_the_steps_below_it_from_the_noised_image(sampler):
    process = build_diffusion()
    x0 = torch.rand(SHAPE_ONE, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2 - 1
    seen, noise = [], torch.randn(SHAPE_ONE, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    first = []
    out = sample(
        process,
        _knows_x0(process, x0, seen),
        SHAPE_ONE,
        sampler=sampler,
        steps="25",
        noise=noise,
        temperature=0.5,
        start_image=x0,
        start_step=500,
        clip_denoised=False,
        callback=lambda step, total, x, pred: first.append(total),
    )
    kept = space_timesteps(1000, "25")
    assert seen == [t for t in kept if t <= 500][::-1] and first[0] == len(seen)
    torch.testing.assert_close(out.double(), x0, rtol=0, atol=1e-6)
    # the first step sees start_image noised to its level with the temperature-scaled noise
    seen.clear()
    xs = []
    sample(
        process,
        lambda x, t: (xs.append(x.clone()), _knows_x0(process, x0, seen)(x, t))[1],
        SHAPE_ONE,
        sampler=sampler,
        steps="25",
        noise=noise,
        temperature=0.5,
        start_image=x0,
        start_step=500,
    )
    ab = float(process.alphas_cumprod[seen[0]])
    torch.testing.assert_close(xs[0], math.sqrt(ab) * x0 + math.sqrt(1 - ab) * 0.5 * noise, rtol=0, atol=1e-9)


def test_partway_start_is_refused_where_it_cannot_apply():
    process = build_diffusion()
    image = torch.zeros(SHAPE_ONE)
    model = _knows_x0(process, image, [])
    with pytest.raises(ValueError, match="cannot start part-way"):
        sample(process, model, SHAPE_ONE, sampler="dpmpp_2m", steps=5, start_image=image, start_step=500)
    with pytest.raises(ValueError, match="go together"):
        sample(process, model, SHAPE_ONE, sampler="ddim", steps="25", start_step=500)
    with pytest.raises(ValueError, match="before the process's first step"):
        sample(process, model, SHAPE_ONE, sampler="ddim", steps="10,10", start_image=image, start_step=-1)
    with pytest.raises(ValueError, match="shape"):
        sample(
            process, model, SHAPE_ONE, sampler="ddim", steps="25", start_image=torch.zeros(1, 3, 2, 2), start_step=500
        )
