"""Classifier-free guidance with the reference tiny GLIDE model."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_fp32_close, guidance_amplification

from finetune.diffusion import build_diffusion
from finetune.diffusion.guidance import classifier_free_guidance, cond_uncond_kwargs
from finetune.diffusion.samplers import sample

END_TOKEN = 50256  # GPT-2 padding; the empty caption is all padding with the mask all False


@pytest.fixture(scope="module")
def captions(diffusion_case):
    tokens, mask = diffusion_case["tokens"][[0, 2]], diffusion_case["mask"][[0, 2]].bool()
    empty_tokens = torch.full_like(tokens, END_TOKEN)
    return {"tokens": tokens, "mask": mask}, {"tokens": empty_tokens, "mask": torch.zeros_like(mask)}


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 32, 32, generator=gen), torch.tensor([40, 700])


def test_scale_one_is_the_conditional_model_and_zero_the_unconditional(tiny_base_model, captions, inputs):
    cond, uncond = captions
    x, t = inputs
    kwargs = cond_uncond_kwargs(cond, uncond)
    with torch.no_grad():
        cond_out = tiny_base_model(x, t, **cond)
        uncond_out = tiny_base_model(x, t, **uncond)
        at_one = classifier_free_guidance(tiny_base_model, 1.0)(x, t, **kwargs)
        at_zero = classifier_free_guidance(tiny_base_model, 0.0)(x, t, **kwargs)
        at_three = classifier_free_guidance(tiny_base_model, 3.0)(x, t, **kwargs)
    assert not torch.allclose(cond_out[:, :3], uncond_out[:, :3], atol=1e-3)  # the caption matters
    # the guided pass batches both captions in one forward, the references ran them one at a time
    assert_fp32_close(at_one, cond_out, guidance_amplification(1.0))
    assert_fp32_close(at_zero[:, :3], uncond_out[:, :3], guidance_amplification(0.0))
    expected = uncond_out[:, :3] + 3.0 * (cond_out[:, :3] - uncond_out[:, :3])
    assert_fp32_close(at_three[:, :3], expected, guidance_amplification(3.0))
    # the conditional pass's variance channels are kept at every scale
    for out in (at_zero, at_three):
        assert_fp32_close(out[:, 3:], cond_out[:, 3:])


def test_precomputed_text_embeddings_guide_like_tokens(tiny_base_model, captions, inputs):
    cond, uncond = captions
    x, t = inputs
    scale = 2.5
    guided = classifier_free_guidance(tiny_base_model, scale)
    with torch.no_grad():
        from_tokens = guided(x, t, **cond_uncond_kwargs(cond, uncond))
        emb_kwargs = cond_uncond_kwargs(
            {"text_emb": tiny_base_model.encode_text(**cond)}, {"text_emb": tiny_base_model.encode_text(**uncond)}
        )
        from_embeddings = guided(x, t, **emb_kwargs)
    assert_fp32_close(from_embeddings, from_tokens, guidance_amplification(scale))


def test_guided_sampling_is_reproducible(tiny_base_model, captions):
    cond, uncond = captions
    model_fn = classifier_free_guidance(tiny_base_model, 3.0)
    kwargs = cond_uncond_kwargs(cond, uncond)

    def run():
        return sample(
            build_diffusion(),
            model_fn,
            (2, 3, 32, 32),
            sampler="dpmpp_2m",
            steps=2,
            model_kwargs=kwargs,
            generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)],
        )

    first = run()
    assert first.shape == (2, 3, 32, 32) and torch.isfinite(first).all()
    assert torch.equal(first, run())


def test_shared_kwargs_are_repeated_for_the_unconditional_half():
    low_res = torch.randn(2, 3, 8, 8)
    stacked = cond_uncond_kwargs(
        {"tokens": torch.ones(2, 4, dtype=torch.long), "low_res": low_res},
        {"tokens": torch.zeros(2, 4, dtype=torch.long)},
    )
    assert torch.equal(stacked["low_res"], torch.cat([low_res, low_res]))
    assert stacked["tokens"][:2].eq(1).all() and stacked["tokens"][2:].eq(0).all()
    seen = {}

    def fake_model(x, t, **kwargs):
        seen.update(kwargs, x=x, t=t)
        return torch.zeros(x.shape[0], 6, *x.shape[2:])

    out = classifier_free_guidance(fake_model, 4.0)(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), **stacked)
    assert out.shape == (2, 6, 8, 8) and seen["x"].shape[0] == 4 and seen["t"].tolist() == [1, 2, 1, 2]


def test_unconditional_only_kwargs_are_refused():
    with pytest.raises(ValueError, match="no conditional counterpart"):
        cond_uncond_kwargs({"tokens": torch.ones(1, 4)}, {"mask": torch.ones(1, 4)})
