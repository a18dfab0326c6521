"""The text-to-image pipeline: seeds, guidance, text encoding, the upsampler stage, inpainting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sampling.pipeline as pipeline_module
from sampling.inpaint import InpaintInputs
from sampling.loading import load_models
from sampling.pipeline import TextToImage, quantize_8bit
from sampling.settings import SamplerSettings

CPU = torch.device("cpu")
FAST_BASE = SamplerSettings(sampler="dpmpp_2m", steps=3, guidance=3.0)
FAST_UP = SamplerSettings(sampler="ddim", steps="3", guidance=None, temperature=0.997)


def pixels(image):
    return np.asarray(image).astype(int)


def test_seeds_reproduce_and_do_not_depend_on_the_batch(models):
    pipe = TextToImage(models, CPU, base=FAST_BASE, upsampler=FAST_UP)
    first = pipe.generate(["a red boat", "a cat"], [11, 12], progress=False)
    again = pipe.generate(["a red boat", "a cat"], [11, 12], progress=False)
    alone = pipe.generate(["a cat"], [12], progress=False)
    assert first[0].image.size == (32, 32) and first[0].base_image.size == (16, 16)
    for a, b in zip(first, again):
        assert (pixels(a.image) == pixels(b.image)).all() and (pixels(a.base_image) == pixels(b.base_image)).all()
    assert np.abs(pixels(alone[0].image) - pixels(first[1].image)).max() <= 1
    other_seed = pipe.generate(["a cat"], [13], progress=False)
    assert np.abs(pixels(other_seed[0].base_image) - pixels(alone[0].base_image)).mean() > 5


def test_every_sampler_runs_at_its_settings(base_only):
    for settings in (
        SamplerSettings("ancestral", "4"),
        SamplerSettings("ddim", "ddim4", eta=0.5),
        SamplerSettings("dpmpp_2m", 4),
        SamplerSettings("ancestral", "2,1"),
    ):
        pipe = TextToImage(base_only, CPU, base=settings)
        a = pipe.generate(["x"], [3], progress=False)[0]
        b = pipe.generate(["x"], [3], progress=False)[0]
        assert a.image.size == (16, 16) and (pixels(a.image) == pixels(b.image)).all()
        assert pipe.parameters("x", 3)["sampler"] == settings.sampler


def test_text_encoded_once_per_image_and_guidance_batches_cond_with_uncond(base_only, monkeypatch):
    model = base_only.base.model
    encodes, forwards = [], []
    real_encode, real_forward = model.encode_text, model.forward
    monkeypatch.setattr(
        model, "encode_text", lambda tokens, mask: encodes.append(tokens.shape[0]) or real_encode(tokens, mask)
    )
    monkeypatch.setattr(
        model, "forward", lambda x, t, **kw: forwards.append((x.shape[0], sorted(kw))) or real_forward(x, t, **kw)
    )
    TextToImage(base_only, CPU, base=SamplerSettings("ddim", "5", guidance=4.0)).generate(
        ["a", "b", "c"], [1, 2, 3], progress=False
    )
    assert encodes == [3, 3]  # captions once, empty captions once: not once per step
    assert len(forwards) == 5 and all(batch == 6 and keys == ["text_emb"] for batch, keys in forwards)
    forwards.clear()
    TextToImage(base_only, CPU, base=SamplerSettings("ddim", "5", guidance=None)).generate(["a"], [1], progress=False)
    assert [batch for batch, _ in forwards] == [1] * 5  # no guidance: the conditional pass alone


def test_guidance_one_is_the_conditional_model_and_zero_the_unconditional(base_only):
    def run(guidance, prompt):
        pipe = TextToImage(base_only, CPU, base=SamplerSettings("ddim", "5", guidance=guidance))
        return pixels(pipe.generate([prompt], [5], progress=False)[0].base_image)

    assert (run(1.0, "a tree") == run(None, "a tree")).all()
    assert np.abs(run(0.0, "a tree") - run(None, "")).max() <= 1  # DDIM ignores the variance channels
    assert np.abs(run(3.0, "a tree") - run(None, "a tree")).mean() > 1


def test_upsampler_stage_follows_openai(models, monkeypatch):
    calls = []
    real_sample = pipeline_module.sample

    def spy(diffusion, model_fn, shape, **kw):
        calls.append((shape, kw, model_fn))
        return real_sample(diffusion, model_fn, shape, **kw)

    monkeypatch.setattr(pipeline_module, "sample", spy)
    pipe = TextToImage(models, CPU, base=FAST_BASE)  # upsampler defaults
    result = pipe.generate(["a lighthouse"], [9], progress=False)[0]
    (base_shape, base_kw, _), (up_shape, up_kw, up_fn) = calls
    assert base_shape == (1, 3, 16, 16) and up_shape == (1, 3, 32, 32)
    assert up_kw["sampler"] == "ddim" and up_kw["steps"] == "25" and up_kw["temperature"] == 0.997
    # started half-way from the low-res image at the upsampler's size, resized as the model resizes it
    assert up_kw["start_step"] == 500 and "start_image" not in base_kw
    expected_start = torch.nn.functional.interpolate(
        up_kw["model_kwargs"]["low_res"], (32, 32), mode="bilinear", align_corners=False
    )
    assert torch.equal(up_kw["start_image"], expected_start)
    assert base_kw["temperature"] == 1.0
    assert not hasattr(up_fn, "guidance_scale")  # no guidance by default
    low_res = up_kw["model_kwargs"]["low_res"]
    assert torch.equal(low_res, quantize_8bit(low_res))  # the base output, quantized to 8 bits
    assert torch.allclose(
        (low_res[0].permute(1, 2, 0) + 1) * 127.5, torch.tensor(pixels(result.base_image)).float(), atol=1e-3
    )
    params = pipe.parameters("a lighthouse", 9)
    assert params["upsampler"] == {
        "sampler": "ddim",
        "steps": "25",
        "guidance": None,
        "eta": 0.0,
        "temperature": 0.997,
        "start_step": 500,
    }
    assert params["size"] == 32 and "+" in params["model"]


def test_long_captions_are_truncated_with_a_warning(base_only):
    pipe = TextToImage(base_only, CPU, base=FAST_BASE)
    short, long = pipe.generate(["a cat", "a cat " * 40], [1, 2], progress=False)
    assert not short.truncated and long.truncated and "truncated" in long.warnings[0]


@pytest.mark.parametrize(
    "settings, message",
    [
        (SamplerSettings(guidance=60.0), "guidance scale must be between 0 and 50"),
        (SamplerSettings(guidance=-1.0), "guidance scale must be between 0 and 50"),
        (SamplerSettings("ancestral", "lots"), "not a usable respacing"),
        (SamplerSettings("ancestral", "2000"), "not a usable respacing"),
        (SamplerSettings("dpmpp_2m", 0), "between 1 and 1000"),
        (SamplerSettings("dpmpp_2m", "fast27"), "takes a number of steps"),
        (SamplerSettings("dpmpp_2m", 5, eta=0.3), "eta applies to the ddim sampler only"),
        (SamplerSettings("euler"), "unknown sampler"),
        (SamplerSettings("dpmpp_2m_sde", 20, start_step=500), "start step applies to the ancestral and ddim"),
        (SamplerSettings("ddim", "25", start_step=1000), "start step must be between 1 and 999"),
        (SamplerSettings("ddim", "25", start_step=-3), "start step must be between 1 and 999"),
    ],
)
def test_settings_out_of_range(base_only, settings, message):
    with pytest.raises(ValueError, match=message):
        TextToImage(base_only, CPU, base=settings)
    with pytest.raises(ValueError, match="upsampler: temperature"):
        SamplerSettings(temperature=0.0).check(1000, "upsampler")


def test_seed_and_batch_checks(base_only):
    pipe = TextToImage(base_only, CPU, base=FAST_BASE)
    with pytest.raises(ValueError, match="seed must be between"):
        pipe.generate(["a"], [-1], progress=False)
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        pipe.generate(["a", "b"], [1], progress=False)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmpp_2m", "dpmpp_2m_sde"])
def test_inpainting_keeps_the_known_pixels(tiny_models, sampler):
    from PIL import Image

    models = load_models(str(tiny_models["inpaint"]), CPU)
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    fill = np.zeros((32, 32), dtype=bool)
    fill[8:24, 4:20] = True
    inputs = InpaintInputs(source, fill, "test")
    steps = {"ancestral": "4", "ddim": "4", "dpmpp_2m": 4, "dpmpp_2m_sde": 4}[sampler]
    pipe = TextToImage(models, CPU, base=SamplerSettings(sampler, steps), upsampler=SamplerSettings("ddim", "3", None))
    known16, known32 = inputs.at(16), inputs.at(32)
    result = pipe.generate(["a red square"], [4], known=(known16, known32), progress=False)[0]
    for image, known in ((result.base_image, known16), (result.image, known32)):
        keep = known.mask[0, 0].numpy().astype(bool)
        expected = np.round((known.image[0].permute(1, 2, 0).numpy() + 1) * 127.5)
        assert keep.sum() > 0 and (~keep).sum() > 0
        assert np.abs(pixels(image)[keep] - expected[keep]).max() <= 1
        assert np.abs(pixels(image)[~keep] - expected[~keep]).mean() > 5  # the hole was filled with something new


def test_bf16_autocast_runs(base_only):
    pipe = TextToImage(base_only, CPU, torch.bfloat16, base=FAST_BASE)
    image = pipe.generate(["a"], [1], progress=False)[0].image
    assert image.size == (16, 16) and pipe.parameters("a", 1)["precision"] == "bf16"
