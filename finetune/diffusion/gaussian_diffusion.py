"""GLIDE's Gaussian diffusion: the forward process, the learned-variance reverse step and the
hybrid training loss, in one module.

Conventions (those of OpenAI's GLIDE / improved-diffusion):
- A process has ``num_timesteps`` steps indexed 0..T-1; index 0 is the least noisy.
- The model predicts eps in its first C output channels and, in the next C, values ``v`` in
  roughly [-1, 1] that interpolate the log variance between the posterior variance (v = -1)
  and beta (v = +1) of the process being sampled ("learned range").
- A respaced process keeps a subset of the original steps; its betas are recomputed so that the
  kept steps have the original cumulative alphas, and the model is always called with the
  ORIGINAL timestep (``timestep_map``).
- Schedule tables are float64; a gathered coefficient is cast to float32 before it touches a
  tensor (float64 when the tensor is float64), exactly as the reference does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .schedules import get_named_beta_schedule, space_timesteps

LOSS_TYPES = ("hybrid", "mse")
MSE_WEIGHTINGS = ("eps", "v")


class GaussianDiffusion:
    """A discrete Gaussian diffusion process (possibly a respaced view of a longer one)."""

    def __init__(self, betas: Sequence[float] | np.ndarray, timestep_map: Sequence[int] | None = None):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0:
            raise ValueError("betas must be a non-empty 1-D array")
        if not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("every beta must be in (0, 1]")
        self.betas = betas
        self.num_timesteps = int(betas.size)
        self.timestep_map = np.arange(self.num_timesteps) if timestep_map is None else np.asarray(timestep_map)
        if self.timestep_map.shape != betas.shape:
            raise ValueError("timestep_map must have one original timestep per step")

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        self.log_betas = np.log(betas)

        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t = 0; its log borrows the value at t = 1 there.
        posterior_for_log = self.posterior_variance.copy()
        if self.num_timesteps > 1:
            posterior_for_log[0] = self.posterior_variance[1]
        self.posterior_log_variance_clipped = np.log(posterior_for_log)
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

        self._device_tables: dict[tuple[str, torch.device], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"GaussianDiffusion(num_timesteps={self.num_timesteps}, original_steps={self.original_timesteps})"

    @property
    def original_timesteps(self) -> int:
        """Number of steps of the process this one was respaced from (or its own)."""
        return int(self.timestep_map[-1]) + 1

    # ----------------------------------------------------------------- respacing
    def respace(self, spec: str | int | Sequence[int] | None) -> "GaussianDiffusion":
        """A process keeping the steps ``space_timesteps(num_timesteps, spec)`` of this one."""
        if spec is None or spec == "":
            return self
        kept = space_timesteps(self.num_timesteps, spec)
        new_betas, previous = [], 1.0
        for i in kept:
            new_betas.append(1.0 - self.alphas_cumprod[i] / previous)
            previous = self.alphas_cumprod[i]
        return GaussianDiffusion(np.array(new_betas), timestep_map=self.timestep_map[kept])

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The original timesteps the model is called with for process indices ``t``."""
        return self._table("timestep_map", t.device)[t]

    def sample_timesteps(self, batch_size: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniformly drawn training timesteps (process indices)."""
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=gen_device)
        return t.to(device) if device is not None else t

    # ----------------------------------------------------------------- forward process
    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log variance of q(x_t | x_0)."""
        mean = self._coef("sqrt_alphas_cumprod", t, x_start) * x_start
        variance = self._coef("one_minus_alphas_cumprod", t, x_start).expand_as(x_start)
        log_variance = self._coef("log_one_minus_alphas_cumprod", t, x_start).expand_as(x_start)
        return mean, variance, log_variance

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) (with the given standard normal ``noise``)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        if noise.shape != x_start.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x_start shape {tuple(x_start.shape)}")
        return (
            self._coef("sqrt_alphas_cumprod", t, x_start) * x_start
            + self._coef("sqrt_one_minus_alphas_cumprod", t, x_start) * noise
        )

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        if x_start.shape != x_t.shape:
            raise ValueError(f"x_start shape {tuple(x_start.shape)} != x_t shape {tuple(x_t.shape)}")
        mean = self._coef("posterior_mean_coef1", t, x_t) * x_start + self._coef("posterior_mean_coef2", t, x_t) * x_t
        variance = self._coef("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self._coef("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (
            self._coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t
            - self._coef("sqrt_recipm1_alphas_cumprod", t, x_t) * eps
        )

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        return (self._coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t - pred_xstart) / self._coef(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    # ----------------------------------------------------------------- reverse process
    def call_model(
        self, model: Callable, x: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None = None
    ) -> torch.Tensor:
        """Run the model at process indices ``t`` (it sees the original timesteps); float output like x."""
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        out = model(x, self.model_timesteps(t), **(model_kwargs or {}))
        if isinstance(out, tuple):  # models that return (output, extra)
            out = out[0]
        expected = (x.shape[0], 2 * x.shape[1], *x.shape[2:])
        if tuple(out.shape) != expected:
            raise ValueError(
                f"model output has shape {tuple(out.shape)}; expected {expected} (eps and variance values)"
            )
        return out.to(x.dtype)

    def p_mean_variance(
        self,
        model: Callable,
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        model_kwargs: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) from the model: ``mean``, ``variance``, ``log_variance``, ``pred_xstart``, ``eps``.

        ``denoised_fn`` edits the predicted x_0 (e.g. forcing known pixels) before the optional
        clipping to [-1, 1]; both happen before the mean is formed.
        """
        return self.p_mean_variance_from_output(
            self.call_model(model, x, t, model_kwargs), x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn
        )

    def p_mean_variance_from_output(
        self,
        model_output: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Like ``p_mean_variance`` for an already computed 2C-channel model output."""
        eps, var_values = model_output.split(x.shape[1], dim=1)
        min_log = self._coef("posterior_log_variance_clipped", t, x)
        max_log = self._coef("log_betas", t, x)
        frac = (var_values + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": mean,
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
        }

    def p_sample(
        self,
        model: Callable,
        x: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        model_kwargs: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """One ancestral step x_t -> x_{t-1} (``noise`` is its standard normal draw; none at t = 0)."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        if noise is None:
            noise = torch.randn_like(x)
        sample = out["mean"] + _nonzero_mask(t, x) * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(
        self,
        model: Callable,
        x: torch.Tensor,
        t: torch.Tensor,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        model_kwargs: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """One DDIM step x_t -> x_{t-1}; ``eta`` = 0 is deterministic, 1 matches DDPM's variance."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        # eps consistent with the (possibly edited or clipped) x_0 prediction
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = self._coef("alphas_cumprod", t, x)
        alpha_bar_prev = self._coef("alphas_cumprod_prev", t, x)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        mean = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        if eta > 0:
            if noise is None:
                noise = torch.randn_like(x)
            mean = mean + _nonzero_mask(t, x) * sigma * noise
        return {"sample": mean, "pred_xstart": out["pred_xstart"]}

    # ----------------------------------------------------------------- training loss
    def training_losses(
        self,
        model: Callable,
        x_start: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        noise: torch.Tensor | None = None,
        loss_type: str = "hybrid",
        mse_weighting: str = "eps",
        mse_weight_cap: float = 100.0,
        eps_target: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample losses ``loss``, ``mse``, ``vb`` (shape [B]).

        ``eps_target``: what the eps MSE regresses to instead of ``noise`` (e.g. a frozen model's prediction for
        the same ``x_t``, to keep a fine-tune's output there unchanged); ``x_t`` is still made with ``noise``.

        ``mse_weighting`` sets how the eps MSE counts in ``loss`` at each timestep (``mse`` is always the
        plain eps MSE): ``eps`` uniformly (GLIDE); ``v`` times 1/alpha_bar_t = 1 + 1/SNR, capped at
        ``mse_weight_cap``, which is the v-prediction loss. The optimum is the same; ``v`` puts more weight
        on high noise, where plain eps MSE barely sees errors in global colour and layout.

        ``hybrid`` (improved-diffusion's learned-sigma objective, GLIDE's training loss):
        eps MSE averaged over C,H,W plus the VLB term in bits/dim, where the VLB sees the
        predicted mean detached so it only trains the variance channels, is computed without
        clipping, is the decoder NLL at t = 0 and a KL elsewhere, and is scaled by T/1000.
        ``mse``: eps MSE only (``vb`` is zero); the model may then output C or 2C channels.
        """
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")
        mse_weights = self.mse_weights(t, mse_weighting, mse_weight_cap)  # checks the weighting before the model runs
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise)
        channels = x_start.shape[1]
        out = model(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        if isinstance(out, tuple):
            out = out[0]
        out = out.to(x_start.dtype)
        if out.shape[1] == 2 * channels:
            eps, var_values = out.split(channels, dim=1)
        elif out.shape[1] == channels and loss_type == "mse":
            eps, var_values = out, None
        else:
            raise ValueError(
                f"model output has {out.shape[1]} channels; the {loss_type} loss needs "
                f"{2 * channels}" + (f" or {channels}" if loss_type == "mse" else "")
            )
        mse = mean_flat(((noise if eps_target is None else eps_target) - eps) ** 2)
        weighted_mse = mse * mse_weights.to(mse.dtype)
        if loss_type == "hybrid":
            frozen = torch.cat([eps.detach(), var_values], dim=1)
            vb = self.vb_terms_bpd(frozen, x_start, x_t, t, clip_denoised=False)["output"]
            vb = vb * (self.num_timesteps / 1000.0)
        else:
            vb = torch.zeros_like(mse)
        return {"loss": weighted_mse + vb, "mse": mse, "vb": vb}

    def mse_weights(self, t: torch.Tensor, mse_weighting: str = "eps", cap: float = 100.0) -> torch.Tensor:
        """Per-sample weights of the eps MSE at process indices ``t`` (see ``training_losses``)."""
        if mse_weighting not in MSE_WEIGHTINGS:
            raise ValueError(f"unknown mse_weighting {mse_weighting!r}; known: {', '.join(MSE_WEIGHTINGS)}")
        if mse_weighting == "eps":
            return torch.ones(t.shape, device=t.device)
        if not cap >= 1.0:
            raise ValueError(f"mse_weight_cap must be >= 1, got {cap}")
        inverse_alpha_bar = 1.0 / self._table("alphas_cumprod", t.device)[t]  # cached table: no copy per step
        return inverse_alpha_bar.clamp(max=cap).float()

    def vb_terms_bpd(
        self,
        model_output: torch.Tensor,
        x_start: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = False,
    ) -> dict[str, torch.Tensor]:
        """One term of the variational bound in bits/dim: decoder NLL at t = 0, KL otherwise."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance_from_output(model_output, x_t, t, clip_denoised=clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out["pred_xstart"]}

    # ----------------------------------------------------------------- helpers
    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, device)
        table = self._device_tables.get(key)
        if table is None:
            if name == "one_minus_alphas_cumprod":
                values = 1.0 - self.alphas_cumprod
            else:
                values = getattr(self, name)
            table = torch.from_numpy(np.ascontiguousarray(values))
            if device.type == "mps" and table.dtype == torch.float64:  # no float64 there
                table = table.float()
            table = table.to(device)
            self._device_tables[key] = table
        return table

    def _coef(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at indices ``t``, shaped [B, 1, ...] to broadcast against x."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        values = self._table(name, x.device)[t.to(x.device)].to(dtype)
        return values.view(-1, *([1] * (x.ndim - 1)))


def build_diffusion(
    steps: int = 1000, noise_schedule: str = "squaredcos_cap_v2", timestep_respacing: str | int | Sequence[int] = ""
) -> GaussianDiffusion:
    """GLIDE's diffusion: ``steps`` steps of ``noise_schedule``, respaced by ``timestep_respacing``.

    ``steps`` and a text respacing are held to the model options' limits (``finetune.model.limits``)
    before any table is computed."""
    from finetune.model.limits import check_option  # imported here: the limits module imports the schedules

    check_option("diffusion_steps", steps, label="diffusion steps")
    if isinstance(timestep_respacing, str):
        check_option("timestep_respacing", timestep_respacing, label="timestep respacing")
    return GaussianDiffusion(get_named_beta_schedule(noise_schedule, steps)).respace(timestep_respacing)


def diffusion_from_options(options: dict, timestep_respacing: str | int | None = None) -> GaussianDiffusion:
    """The diffusion a model options dict names (``diffusion_steps``, ``noise_schedule``,
    ``timestep_respacing``; GLIDE's defaults when absent), optionally with another respacing."""
    respacing = options.get("timestep_respacing", "") if timestep_respacing is None else timestep_respacing
    return build_diffusion(
        steps=options.get("diffusion_steps", 1000),
        noise_schedule=options.get("noise_schedule", "squaredcos_cap_v2"),
        timestep_respacing=respacing,
    )


def _nonzero_mask(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (t != 0).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of the standard normal CDF (the one the reference loss uses)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, *, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """Log probability of 8-bit images x in [-1, 1] under a Gaussian discretised into 256 bins
    (the outer bins reach to +-infinity), elementwise, in nats."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
