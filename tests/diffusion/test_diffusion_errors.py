"""Clear errors for bad schedules, respacing specs, sampler arguments and model outputs; the
hybrid loss keeps the predicted mean out of the VLB's gradient."""

from __future__ import annotations

import pytest
import torch

from finetune.diffusion import build_diffusion, space_timesteps
from finetune.diffusion.samplers import sample


def _zero_model(x, t, **kwargs):
    return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])


def test_unknown_noise_schedule_names_the_known_ones():
    with pytest.raises(ValueError, match="squaredcos_cap_v2"):
        build_diffusion(noise_schedule="cosine")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("abc", "bad timestep respacing"),
        ("2000", "cannot hold"),
        ("10,0", "at least 1"),
        ("ddim999", "no integer stride"),
        ("ddimx", "bad timestep respacing"),
    ],
)
def test_bad_respacing_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        space_timesteps(1000, spec)


def test_respacing_forms():
    assert space_timesteps(1000, "") == list(range(1000))
    assert space_timesteps(1000, 4) == space_timesteps(1000, "4") == [0, 333, 666, 999]
    assert space_timesteps(10, [2, 1]) == [0, 4, 5]
    assert build_diffusion(steps=100, timestep_respacing="10").num_timesteps == 10


def test_sampler_argument_errors():
    diffusion = build_diffusion()
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(diffusion, _zero_model, (1, 3, 4, 4), sampler="euler")
    with pytest.raises(ValueError, match="noise shape"):
        sample(diffusion, _zero_model, (1, 3, 4, 4), noise=torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        sample(diffusion, _zero_model, (3, 3, 4, 4), generator=[torch.Generator(), torch.Generator()])
    with pytest.raises(ValueError, match="between 1 and 1000"):
        sample(diffusion, _zero_model, (1, 3, 4, 4), steps=0)
    with pytest.raises(ValueError, match="eta"):
        sample(diffusion, _zero_model, (1, 3, 4, 4), sampler="ddim", eta=-1)


def test_model_output_with_wrong_channel_count_is_explained():
    diffusion = build_diffusion()
    three_channels = lambda x, t, **kw: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="expected \\(1, 6, 4, 4\\)"):
        sample(diffusion, three_channels, (1, 3, 4, 4), steps=2)
    with pytest.raises(ValueError, match="needs 6"):
        diffusion.training_losses(three_channels, torch.zeros(1, 3, 4, 4), torch.tensor([3]))
    # the eps-only loss accepts a 3-channel model
    losses = diffusion.training_losses(three_channels, torch.zeros(1, 3, 4, 4), torch.tensor([3]), loss_type="mse")
    assert set(losses) == {"loss", "mse", "vb"}
    with pytest.raises(ValueError, match="unknown loss_type"):
        diffusion.training_losses(_zero_model, torch.zeros(1, 3, 4, 4), torch.tensor([3]), loss_type="kl")


def test_vlb_term_trains_only_the_variance_channels():
    diffusion = build_diffusion()
    output = torch.randn(3, 6, 4, 4, requires_grad=True)
    x0 = torch.rand(3, 3, 4, 4) * 2 - 1
    losses = diffusion.training_losses(lambda x, t, **kw: output, x0, torch.tensor([0, 10, 900]))
    (eps_grad,) = torch.autograd.grad(losses["vb"].sum(), output, retain_graph=True)
    assert eps_grad[:, :3].abs().max() == 0 and eps_grad[:, 3:].abs().max() > 0
    (mse_grad,) = torch.autograd.grad(losses["mse"].sum(), output)
    assert mse_grad[:, 3:].abs().max() == 0 and mse_grad[:, :3].abs().max() > 0
    torch.testing.assert_close(losses["loss"], losses["mse"] + losses["vb"])
    # respaced processes rescale the VLB by T/1000 and call the model with original timesteps
    spaced = build_diffusion(timestep_respacing="100")
    seen = []

    def recording(x, t, **kw):
        seen.append(t.tolist())
        return output.detach()

    spaced.training_losses(recording, x0, torch.tensor([0, 1, 99]))
    assert seen == [[0, 10, 999]]


def test_sample_timesteps_are_uniform_process_indices():
    diffusion = build_diffusion(timestep_respacing="50")
    t = diffusion.sample_timesteps(4000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() == 0 and t.max() == 49
    assert abs(t.double().mean().item() - 24.5) < 1.0


def test_diffusion_from_model_options():
    from finetune.diffusion import diffusion_from_options

    options = {"diffusion_steps": 1000, "noise_schedule": "linear", "timestep_respacing": "50"}
    assert diffusion_from_options(options).num_timesteps == 50
    assert diffusion_from_options(options, timestep_respacing="fast27").timestep_map[-1] == 997
    assert diffusion_from_options({}).num_timesteps == 1000  # GLIDE's defaults


def test_invalid_betas_are_refused():
    from finetune.diffusion import GaussianDiffusion

    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        GaussianDiffusion([0.1, 0.0])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        GaussianDiffusion([])


def test_v_weighting_is_the_v_prediction_loss_below_the_cap():
    diffusion = build_diffusion(1000, "squaredcos_cap_v2")
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([5, 300, 700, 990])
    eps_guess = noise + 0.1 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))

    def model(x, ts):
        return torch.cat([eps_guess, torch.zeros_like(eps_guess)], dim=1)

    plain = diffusion.training_losses(model, x0, t, noise=noise, loss_type="mse")
    v = diffusion.training_losses(model, x0, t, noise=noise, loss_type="mse", mse_weighting="v", mse_weight_cap=1e9)
    torch.testing.assert_close(plain["mse"], v["mse"])
    # v = sqrt(ab) eps - sqrt(1 - ab) x0; with x0 predicted from eps, the v error is the eps error / sqrt(ab)
    ab = torch.from_numpy(diffusion.alphas_cumprod)[t].float()
    x_t = diffusion.q_sample(x0, t, noise)
    x0_hat = diffusion.predict_xstart_from_eps(x_t, t, eps_guess)
    v_true = ab.sqrt()[:, None, None, None] * noise - (1 - ab).sqrt()[:, None, None, None] * x0
    v_hat = ab.sqrt()[:, None, None, None] * eps_guess - (1 - ab).sqrt()[:, None, None, None] * x0_hat
    torch.testing.assert_close(v["loss"], ((v_true - v_hat) ** 2).mean(dim=(1, 2, 3)), rtol=1e-3, atol=1e-6)
    capped = diffusion.training_losses(
        model, x0, t, noise=noise, loss_type="mse", mse_weighting="v", mse_weight_cap=10.0
    )
    weights = capped["loss"] / plain["mse"]
    assert weights[0] == pytest.approx(1.0, abs=1e-3) and weights[-1] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="mse_weighting"):
        diffusion.training_losses(model, x0, t, noise=noise, mse_weighting="snr")


def test_dpmpp_2m_sde_is_stochastic_and_takes_a_step_count():
    diffusion = build_diffusion(1000, "squaredcos_cap_v2")

    def model(x, t):
        return torch.cat([x * 0.5, torch.zeros_like(x)], dim=1)

    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    runs = [
        sample(
            diffusion,
            model,
            (2, 3, 4, 4),
            sampler=name,
            steps=5,
            noise=noise,
            generator=torch.Generator().manual_seed(seed),
        )
        for name, seed in (("dpmpp_2m", 1), ("dpmpp_2m", 2), ("dpmpp_2m_sde", 1), ("dpmpp_2m_sde", 2))
    ]
    torch.testing.assert_close(runs[0], runs[1])  # the ODE ignores the generator once the noise is given
    assert not torch.allclose(runs[2], runs[3])  # the SDE draws fresh noise at every step
    assert all(torch.isfinite(r).all() and r.abs().max() <= 1.0 for r in runs)
    with pytest.raises(ValueError, match="dpmpp_2m_sde takes a number of steps"):
        sample(diffusion, model, (1, 3, 4, 4), sampler="dpmpp_2m_sde", steps="fast27")
