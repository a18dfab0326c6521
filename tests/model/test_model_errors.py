"""Clear errors for wrong inputs and options."""

from __future__ import annotations

import pytest
import torch

from finetune.model import build_model, get_preset


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return build_model(get_preset("tiny-base")).eval()


@pytest.fixture(scope="module")
def upsampler():
    return build_model(get_preset("tiny-upsample")).eval()


def inputs(model, batch=2, **overrides):
    size, ctx = model.image_size, model.text_ctx
    kwargs = {
        "x": torch.randn(batch, 3, size, size),
        "timesteps": torch.tensor([1, 500][:batch]),
        "tokens": torch.ones(batch, ctx, dtype=torch.long),
        "mask": torch.ones(batch, ctx, dtype=torch.bool),
    }
    kwargs.update(overrides)
    return kwargs


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"x": torch.randn(2, 4, 32, 32)}, r"x must be a \[2, 3, H, W\]"),
        ({"x": torch.randn(2, 3, 30, 32)}, "x is 30x32 pixels; height and width must be positive multiples of 4"),
        ({"x": torch.randn(2, 3, 32, 0)}, "positive multiples of 4"),
        ({"x": torch.randn(3, 32, 32)}, "x must be a"),
        ({"timesteps": torch.tensor([1, 2, 3])}, "timesteps must be a 1-D tensor of 2"),
        ({"tokens": torch.ones(2, 15, dtype=torch.long)}, "text_ctx=16"),
        ({"tokens": torch.ones(2, 16)}, "integer ids"),
        ({"tokens": torch.full((2, 16), 49408)}, r"token ids must lie in \[0, 49408\)"),
        ({"tokens": None}, "tokens are required"),
        ({"mask": None}, "mask is required"),
        ({"mask": torch.ones(2, 8, dtype=torch.bool)}, "mask shape"),
        ({"low_res": torch.randn(2, 3, 16, 16)}, "not a super-resolution model"),
        ({"inpaint_image": torch.randn(2, 3, 32, 32)}, "not an inpainting model"),
    ],
)
def test_base_model_input_errors(base, overrides, message):
    with pytest.raises(ValueError, match=message):
        base(**inputs(base, **overrides))


def test_super_res_needs_low_res(upsampler):
    with pytest.raises(ValueError, match="low_res is required"):
        upsampler(**inputs(upsampler))
    with pytest.raises(ValueError, match=r"low_res must be a \[2, 3, H, W\]"):
        upsampler(**inputs(upsampler, low_res=torch.randn(2, 1, 16, 16)))


def test_inpaint_shapes_are_checked():
    model = build_model(get_preset("tiny-base-inpaint")).eval()
    with pytest.raises(ValueError, match=r"inpaint_mask must be a \[2, 1, H, W\]"):
        model(**inputs(model, inpaint_image=torch.randn(2, 3, 32, 32), inpaint_mask=torch.ones(2, 3, 32, 32)))


def test_text_emb_errors(base):
    kw = inputs(base)
    emb = base.encode_text(kw["tokens"][:1], kw["mask"][:1])
    with pytest.raises(ValueError, match="text batch size 1 does not match image batch size 2"):
        base(kw["x"], kw["timesteps"], text_emb=emb)
    with pytest.raises(ValueError, match="either tokens/mask or text_emb"):
        base(kw["x"][:1], kw["timesteps"][:1], tokens=kw["tokens"][:1], mask=kw["mask"][:1], text_emb=emb)
    with pytest.raises(TypeError, match="encode_text"):
        base(kw["x"], kw["timesteps"], text_emb=(emb.pooled, emb.sequence))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_channels": 48}, "multiple of 32"),
        ({"image_size": 32}, "no default channel_mult"),
        ({"image_size": 64, "channel_mult": "1,2,2"}, "2\\*\\*\\(levels\\+2\\)"),
        ({"attention_resolutions": "32,abc"}, r'options.attention_resolutions="32,abc" must be .* integers'),
        ({"tokenizer": "bert"}, 'options.tokenizer="bert" must be one of gpt2, clip'),
        ({"xf_widht": 64}, "unknown model option"),
        ({"xf_width": 100, "xf_heads": 8}, "not divisible by xf_heads"),
    ],
)
def test_bad_options(options, message):
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        build_model(options)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown model preset 'glide-huge'.*glide-base"):
        get_preset("glide-huge")
    with pytest.raises(KeyError) as err:  # also a KeyError, with a readable message
        get_preset("glide-huge")
    assert str(err.value).startswith("unknown model preset 'glide-huge'")
