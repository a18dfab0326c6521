"""Non-square sampling: base, upsampler and inpainting draw at a requested (height, width); squares are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from finetune.model import build_model, get_preset
from sampling.inpaint import InpaintInputs
from sampling.loading import load_models
from sampling.pipeline import TextToImage
from sampling.settings import SamplerSettings
from sampling.shapes import ShapeError, base_multiple, check_base_shape, fit_shape, shape_for_aspect

CPU = torch.device("cpu")
FAST_BASE = SamplerSettings(sampler="dpmpp_2m", steps=3, guidance=3.0)
FAST_UP = SamplerSettings(sampler="ddim", steps="3", guidance=None, temperature=0.997)


def pixels(image):
    return np.asarray(image).astype(int)


def test_every_variant_forwards_a_non_square_input():
    tokens = torch.ones(1, 16, dtype=torch.long)
    mask = torch.ones(1, 16, dtype=torch.bool)
    t = torch.tensor([10])
    for preset, extra in (
        ("tiny-base", {}),
        ("tiny-upsample", {"low_res": torch.randn(1, 3, 16, 32)}),
        ("tiny-base-inpaint", {"inpaint_image": torch.randn(1, 3, 24, 40), "inpaint_mask": torch.ones(1, 1, 24, 40)}),
    ):
        model = build_model(get_preset(preset)).eval()
        x = torch.randn(1, 3, 24, 40) if preset != "tiny-upsample" else torch.randn(1, 3, 32, 64)
        with torch.no_grad():
            out = model(x, t, tokens=tokens, mask=mask, **extra)
        assert out.shape == (1, 6, *x.shape[2:]), preset
    with pytest.raises(ValueError, match="inpaint_mask must be 24x40"):
        model(torch.randn(1, 3, 24, 40), t, tokens=tokens, mask=mask, inpaint_mask=torch.ones(1, 1, 24, 24))


def test_fit_shape_keeps_the_pixel_budget_and_the_aspect():
    assert fit_shape(1.0, 32, 4) == (32, 32)
    assert fit_shape(2.0, 32, 4) == (20, 40)
    assert fit_shape(0.5, 32, 4) == (40, 20)
    height, width = fit_shape(2 / 3, 32, 4)
    assert height * width <= 32 * 32 and abs(width / height - 2 / 3) < 0.05 and height % 4 == width % 4 == 0
    for bad in (5.0, 0.1, float("nan")):
        with pytest.raises(ShapeError, match="aspect ratio"):
            fit_shape(bad, 32, 4)


def test_the_base_multiple_makes_the_upsampled_shape_valid_too(models, base_only):
    # base 16 px halves once (multiple 2); the upsampler doubles to 32 px and halves twice (multiple 4): 2 * 2 = 4.
    assert base_multiple(base_only) == 2 and base_multiple(models) == 2
    assert shape_for_aspect(models, 1.0) == (16, 16)
    with pytest.raises(ShapeError, match="multiples of 2"):
        check_base_shape(models, (9, 16))
    with pytest.raises(ShapeError, match="budget"):
        check_base_shape(models, (16, 24))
    with pytest.raises(ShapeError, match="elongated"):
        check_base_shape(models, (2, 12))


def test_base_and_upsampler_draw_at_the_requested_shape(models):
    pipe = TextToImage(models, CPU, base=FAST_BASE, upsampler=FAST_UP)
    result = pipe.generate(["a red boat"], [5], shape=(10, 20), progress=False)[0]
    assert result.base_image.size == (20, 10) and result.image.size == (40, 20)
    assert pipe.parameters("a red boat", 5, shape=(10, 20))["size"] == [20, 40]
    tall = pipe.generate(["a red boat"], [5], shape=(20, 10), progress=False)[0]
    assert tall.image.size == (20, 40)
    with pytest.raises(ShapeError):
        pipe.generate(["a"], [1], shape=(11, 20), progress=False)


def test_square_outputs_are_unchanged_by_an_explicit_square_shape(models):
    pipe = TextToImage(models, CPU, base=FAST_BASE, upsampler=FAST_UP)
    plain = pipe.generate(["a cat"], [7], progress=False)[0]
    square = pipe.generate(["a cat"], [7], shape=(16, 16), progress=False)[0]
    assert (pixels(plain.image) == pixels(square.image)).all()
    assert pipe.parameters("a cat", 7, shape=(16, 16)) == pipe.parameters("a cat", 7)
    assert pipe.parameters("a cat", 7)["size"] == 32


def test_inpainting_draws_a_non_square_panel_and_keeps_the_known_pixels(tiny_models):
    models = load_models(str(tiny_models["inpaint"]), CPU)
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8))  # 40 wide, 20 tall
    fill = np.zeros((20, 40), dtype=bool)
    fill[4:16, 10:30] = True
    inputs = InpaintInputs(source, fill, "test")
    pipe = TextToImage(models, CPU, base=SamplerSettings("ddim", "4"), upsampler=SamplerSettings("ddim", "3", None))
    known_base, known_up = inputs.at((10, 20)), inputs.at((20, 40))
    result = pipe.generate(["a red square"], [4], known=(known_base, known_up), shape=(10, 20), progress=False)[0]
    assert result.base_image.size == (20, 10) and result.image.size == (40, 20)
    keep = known_up.mask[0, 0].numpy().astype(bool)
    expected = np.round((known_up.image[0].permute(1, 2, 0).numpy() + 1) * 127.5)
    assert np.abs(pixels(result.image)[keep] - expected[keep]).max() <= 1
    assert np.abs(pixels(result.image)[~keep] - expected[~keep]).mean() > 5


@pytest.mark.parametrize(
    "settings",
    [
        SamplerSettings("ancestral", "4"),
        SamplerSettings("ddim", "4", eta=0.5),
        SamplerSettings("dpmpp_2m", 4),
        SamplerSettings("dpmpp_2m_sde", 4),
    ],
)
def test_every_sampler_draws_non_square_batches(base_only, settings):
    pipe = TextToImage(base_only, CPU, base=settings)
    images = pipe.generate(["a", "b"], [1, 2], shape=(8, 24), progress=False)
    assert [g.image.size for g in images] == [(24, 8), (24, 8)]
    alone = pipe.generate(["b"], [2], shape=(8, 24), progress=False)[0]  # per-image seeds hold for any shape
    assert np.abs(pixels(alone.image) - pixels(images[1].image)).max() <= 1
