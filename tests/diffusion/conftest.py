"""Fixtures for the diffusion tests: the reference tiny GLIDE model and Gaussian-data oracles."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from finetune.diffusion import GaussianDiffusion, build_diffusion


@pytest.fixture(scope="session")
def glide_cases(glide_fixtures) -> dict:
    return json.loads((glide_fixtures / "cases.json").read_text())


@pytest.fixture(scope="session")
def diffusion_case(glide_fixtures) -> dict[str, torch.Tensor]:
    return load_file(str(glide_fixtures / "diffusion_case.safetensors"))


@pytest.fixture(scope="session")
def tiny_base_model(glide_fixtures, glide_cases):
    """The reference tiny text-conditioned base model (random weights) the fixtures were made with."""
    from finetune.model import build_model

    model = build_model(glide_cases["tiny_base"]["options"])
    model.load_state_dict(load_file(str(glide_fixtures / "tiny_base_weights.safetensors")))
    return model.eval()


class GaussianOracle:
    """The exact eps model for data x0 ~ N(mu, sd^2), independently per pixel.

    With x_t = a x0 + s eps (a^2 = alpha_bar, s^2 = 1 - alpha_bar), E[eps | x_t] is affine in x_t:
    s (x_t - a mu) / (a^2 sd^2 + s^2). The variance channels return the constant ``v``.
    Called with ORIGINAL timesteps of ``base``.
    """

    def __init__(self, base: GaussianDiffusion, mu: torch.Tensor, sd: torch.Tensor, v: float = 0.3):
        self.base, self.mu, self.sd, self.v = base, mu, sd, v
        self.seen_timesteps: list[list[int]] = []

    def coefficients(self, timestep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, Q) with eps = P x + Q at an original timestep (float64, per pixel)."""
        a2 = float(self.base.alphas_cumprod[timestep])
        a, s = a2**0.5, (1.0 - a2) ** 0.5
        denom = a2 * self.sd.double() ** 2 + s * s
        return s / denom, -s * a * self.mu.double() / denom

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        self.seen_timesteps.append(t.tolist())
        eps = torch.empty_like(x)
        for timestep in t.unique().tolist():
            rows = t == timestep
            p, q = self.coefficients(timestep)
            eps[rows] = p.to(x.dtype) * x[rows] + q.to(x.dtype)
        return torch.cat([eps, torch.full_like(eps, self.v)], dim=1)


@pytest.fixture
def gaussian_oracle() -> GaussianOracle:
    gen = torch.Generator().manual_seed(1234)
    mu = torch.rand(3, 4, 4, generator=gen, dtype=torch.float64) * 1.2 - 0.6
    sd = torch.rand(3, 4, 4, generator=gen, dtype=torch.float64) * 0.45 + 0.05
    return GaussianOracle(build_diffusion(), mu, sd)
