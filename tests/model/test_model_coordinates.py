"""Coordinate channels: the UNet sees where each pixel is, and growing a model into them changes nothing at first."""

from __future__ import annotations

import torch
from tolerances import assert_fp32_close

from finetune.model import build_model, get_preset
from finetune.model.unet import pixel_coordinates
from finetune.train.model_init import transfer_weights


def _randomised(**extra):
    torch.manual_seed(0)
    model = build_model({**get_preset("tiny-base"), **extra})
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model.eval()


def _inputs(model, n=2):
    g = torch.Generator().manual_seed(1)
    size, ctx = model.image_size, model.text_ctx
    tokens = torch.randint(0, model.vocab_size, (n, ctx), generator=g)
    mask = torch.ones(n, ctx, dtype=torch.bool)
    return torch.randn(n, 3, size, size, generator=g), torch.tensor([10, 900][:n]), tokens, mask


def test_pixel_coordinates_run_left_to_right_and_top_to_bottom():
    coords = pixel_coordinates(torch.zeros(2, 3, 4, 6))
    assert coords.shape == (2, 2, 4, 6)
    x, y = coords[0]
    assert torch.all(x[:, 1:] > x[:, :-1]) and torch.all(y[1:] > y[:-1])  # x grows rightwards, y downwards
    assert torch.allclose(x[0], -x[0].flip(0)) and torch.allclose(y[:, 0], -y[:, 0].flip(0))  # centred on 0
    assert x.abs().max() < 1 and torch.all(x == x[0]) and torch.all(y == y[:, :1])


def test_coordinates_make_the_output_depend_on_absolute_position():
    plain, located = _randomised(), _randomised(coord_channels=True)
    assert located.in_channels == plain.in_channels + 2
    x, t, tokens, mask = _inputs(located, n=1)
    rolled = x.roll(shifts=4, dims=3)
    with torch.no_grad():  # a circularly shifted input: only a position-aware model can tell the two apart
        for model, expect_change in ((plain, False), (located, True)):
            out = model(x, t, tokens=tokens, mask=mask)
            out_rolled = model(rolled, t, tokens=tokens, mask=mask)
            interior = (slice(None), slice(None), slice(6, 10), slice(10, 14))
            diff = (out.roll(shifts=4, dims=3)[interior] - out_rolled[interior]).abs().max()
            assert (diff > 1e-3) == expect_change


def test_growing_a_model_into_coordinate_channels_keeps_its_output():
    plain = _randomised()
    options = {**plain.options, "coord_channels": True}
    grown = build_model(options).eval()
    _, notes = transfer_weights(grown, plain.state_dict(), options, allow_vocab_swap=False)
    assert any("zero-initialised" in note for note in notes)
    x, t, tokens, mask = _inputs(plain)
    with torch.no_grad():
        assert_fp32_close(grown(x, t, tokens=tokens, mask=mask), plain(x, t, tokens=tokens, mask=mask))
