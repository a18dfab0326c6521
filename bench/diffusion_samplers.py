"""Sampler accuracy per model call on data whose exact eps is known in closed form.

Data: every pixel i.i.d. from a 1-D mixture of three narrow Gaussians (non-Gaussian, so no
sampler is exact by construction). The "model" is the exact posterior: eps from E[x0 | x_t]
and, for the learned-variance channels, the variance a perfect hybrid-loss model would learn
at the original 1000 steps (GLIDE reuses it on respaced processes the same way). Each sampler
draws N pixels; the figure is the 1-Wasserstein distance between their distribution and the
data's (estimated with quantiles; the floor row is two independent exact draws).

    python bench/diffusion_samplers.py [--pixels 200000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from finetune.diffusion import build_diffusion, space_timesteps
from finetune.diffusion.samplers import sample

WEIGHTS = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
MEANS = torch.tensor([-0.6, 0.1, 0.7], dtype=torch.float64)
STDS = torch.tensor([0.05, 0.15, 0.03], dtype=torch.float64)


class MixtureOracle:
    def __init__(self, diffusion):
        self.d = diffusion
        self.tables = {
            name: torch.from_numpy(getattr(diffusion, name))
            for name in (
                "alphas_cumprod",
                "posterior_variance",
                "posterior_mean_coef1",
                "posterior_log_variance_clipped",
                "log_betas",
            )
        }

    def _at(self, name, t):
        return self.tables[name][t].view(-1, 1, 1, 1)

    def __call__(self, x, t, **kwargs):
        x = x.double()
        a2 = self._at("alphas_cumprod", t)
        a, s = a2.sqrt(), (1 - a2).sqrt()
        xe, ae, se = x.unsqueeze(-1), a.unsqueeze(-1), s.unsqueeze(-1)
        var_t = ae**2 * STDS**2 + se**2
        resp = torch.softmax(torch.log(WEIGHTS) - 0.5 * torch.log(var_t) - 0.5 * (xe - ae * MEANS) ** 2 / var_t, dim=-1)
        comp_mean = MEANS + ae * STDS**2 / var_t * (xe - ae * MEANS)
        comp_var = STDS**2 * se**2 / var_t
        x0_mean = (resp * comp_mean).sum(-1)
        x0_var = (resp * (comp_var + comp_mean**2)).sum(-1) - x0_mean**2
        eps = (x - a * x0_mean) / s
        # the VLB-optimal Gaussian reverse variance at this original step, as learned-range values
        var = self._at("posterior_variance", t) + self._at("posterior_mean_coef1", t) ** 2 * x0_var
        lo, hi = self._at("posterior_log_variance_clipped", t), self._at("log_betas", t)
        v = 2 * (torch.log(var.clamp_min(1e-30)) - lo) / (hi - lo) - 1
        return torch.cat([eps, v], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixels", type=int, default=100_000, help="samples per sampler (default 100000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    diffusion = build_diffusion()
    oracle = MixtureOracle(diffusion)
    gen = torch.Generator().manual_seed(args.seed)
    n = args.pixels
    quantiles = (torch.arange(n, dtype=torch.float64) + 0.5) / n

    def exact_draw(count):
        comp = torch.multinomial(WEIGHTS, count, replacement=True, generator=gen)
        return MEANS[comp] + STDS[comp] * torch.randn(count, generator=gen, dtype=torch.float64)

    reference = exact_draw(20 * n).sort().values
    reference_q = reference[(quantiles * len(reference)).long()]

    def w1(values):
        return (values.flatten().double().sort().values - reference_q).abs().mean().item()

    shape = (1, 1, n // 500, 500) if n % 500 == 0 else (1, 1, 1, n)
    rows = [("exact draw (floor)", "-", w1(exact_draw(n)), 0)]
    configs = [("ancestral", s) for s in ("25", "50", "100", "250")]
    configs += [("ddim", s) for s in ("fast27", "ddim25", "50", "100")]
    configs += [("dpmpp_2m", s) for s in (10, 15, 20, 25, 50)]
    for sampler, steps in configs:
        out = sample(
            diffusion,
            oracle,
            shape,
            sampler=sampler,
            steps=steps,
            clip_denoised=False,
            generator=torch.Generator().manual_seed(args.seed + 1),
        )
        calls = steps if isinstance(steps, int) else len(space_timesteps(1000, steps))
        rows.append((sampler, steps, w1(out), calls))
    uniform = [int(i) for i in np.round(np.linspace(999, 0, 21))[:-1]]
    out = sample(
        diffusion,
        oracle,
        shape,
        sampler="dpmpp_2m",
        timesteps=uniform,
        clip_denoised=False,
        generator=torch.Generator().manual_seed(args.seed + 1),
    )
    rows.append(("dpmpp_2m (uniform grid)", 20, w1(out), 20))

    print(f"{'sampler':26s} {'steps':>7s} {'model calls':>11s} {'W1 to data':>11s}")
    for sampler, steps, dist, calls in rows:
        print(f"{sampler:26s} {str(steps):>7s} {calls:11d} {dist:11.5f}")


if __name__ == "__main__":
    main()
