"""Parity with OpenAI's GLIDE / improved-diffusion, from the shared reference fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finetune.diffusion import build_diffusion, get_named_beta_schedule, space_timesteps

RTOL = 1e-5  # relative to the largest magnitude of the reference tensor


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    actual, expected = actual.double(), expected.double()
    assert actual.shape == expected.shape
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max() / scale
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear"])
def test_betas_match_reference(schedule, diffusion_case):
    betas = get_named_beta_schedule(schedule, 1000)
    np.testing.assert_allclose(betas, diffusion_case[f"betas_{schedule}"].numpy(), rtol=1e-12, atol=0)


def test_respaced_timestep_sets_match_reference(glide_cases):
    specs = glide_cases["diffusion"]["respacing"]
    assert set(specs) >= {"100", "50", "27", "fast27", "ddim25", "10,10,3,2,2"}
    for spec, expected in specs.items():
        assert space_timesteps(1000, spec) == sorted(expected), spec
        assert build_diffusion(timestep_respacing=spec).timestep_map.tolist() == sorted(expected), spec


def test_q_sample_and_posterior_match_reference(diffusion_case):
    d = diffusion_case
    diffusion = build_diffusion()
    assert_close_rel(diffusion.q_sample(d["x0"], d["t"], d["noise"]), d["x_t"])
    mean, var, log_var = diffusion.q_posterior_mean_variance(d["x0"], d["x_t"], d["t"])
    assert_close_rel(mean, d["post_mean"])
    assert_close_rel(var, d["post_var"])
    assert_close_rel(log_var, d["post_log_var"])


def test_respaced_27_betas_match_reference(diffusion_case):
    np.testing.assert_allclose(
        build_diffusion(timestep_respacing="27").betas, diffusion_case["spaced27_betas"].numpy(), rtol=1e-12
    )


@pytest.fixture(scope="module")
def model_kwargs(diffusion_case):
    return {"tokens": diffusion_case["tokens"], "mask": diffusion_case["mask"].bool()}


def test_p_mean_variance_matches_reference(tiny_base_model, diffusion_case, model_kwargs):
    d = diffusion_case
    with torch.no_grad():
        out = build_diffusion().p_mean_variance(
            tiny_base_model, d["x_t"], d["t"], clip_denoised=True, model_kwargs=model_kwargs
        )
    assert_close_rel(out["mean"], d["pmv_mean"])
    assert_close_rel(out["variance"], d["pmv_var"])
    assert_close_rel(out["log_variance"], d["pmv_log_var"])
    assert_close_rel(out["pred_xstart"], d["pmv_xstart"])


def test_one_ancestral_and_ddim_step_match_reference(tiny_base_model, diffusion_case, model_kwargs):
    d = diffusion_case
    diffusion = build_diffusion()
    with torch.no_grad():
        ancestral = diffusion.p_sample(
            tiny_base_model, d["x_t"], d["t"], noise=d["p_sample_noise"], model_kwargs=model_kwargs
        )
        ddim = diffusion.ddim_sample(tiny_base_model, d["x_t"], d["t"], eta=0.0, model_kwargs=model_kwargs)
    assert_close_rel(ancestral["sample"], d["p_sample"])
    assert_close_rel(ddim["sample"], d["ddim_sample"])


def test_respaced_27_p_mean_variance_matches_reference(tiny_base_model, diffusion_case, model_kwargs):
    d = diffusion_case
    spaced = build_diffusion(timestep_respacing="27")
    seen = []

    def recording_model(x, t, **kwargs):
        seen.append(t.tolist())
        return tiny_base_model(x, t, **kwargs)

    with torch.no_grad():
        out = spaced.p_mean_variance(recording_model, d["spaced27_x"], d["spaced27_t"], model_kwargs=model_kwargs)
    assert_close_rel(out["mean"], d["spaced27_mean"])
    assert_close_rel(out["log_variance"], d["spaced27_log_var"])
    # the model sees the original timesteps of the kept steps
    assert seen == [[spaced.timestep_map[i] for i in d["spaced27_t"].tolist()]]


def test_hybrid_loss_matches_reference_per_sample(tiny_base_model, diffusion_case, model_kwargs):
    d = diffusion_case
    with torch.no_grad():
        losses = build_diffusion().training_losses(
            tiny_base_model, d["x0"], d["t"], model_kwargs=model_kwargs, noise=d["noise"]
        )
    for name, key in [("loss", "loss"), ("mse", "loss_mse"), ("vb", "loss_vb")]:
        assert losses[name].shape == (4,)
        torch.testing.assert_close(losses[name], d[key], rtol=RTOL, atol=0)


def test_mse_loss_is_the_eps_term_only(tiny_base_model, diffusion_case, model_kwargs):
    d = diffusion_case
    with torch.no_grad():
        losses = build_diffusion().training_losses(
            tiny_base_model, d["x0"], d["t"], model_kwargs=model_kwargs, noise=d["noise"], loss_type="mse"
        )
    torch.testing.assert_close(losses["mse"], d["loss_mse"], rtol=RTOL, atol=0)
    torch.testing.assert_close(losses["loss"], losses["mse"])
    assert torch.all(losses["vb"] == 0)
