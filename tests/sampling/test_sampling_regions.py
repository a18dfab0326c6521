"""Regional guidance: a caption with two subjects at two places is split into one caption per subject, and each
guides its own half of the picture."""

from __future__ import annotations

import pytest
import torch

from data_pipeline.synthetic.world import POSITIONS
from sampling.loading import load_models
from sampling.pipeline import TextToImage, run_stage
from sampling.regions import RegionalCaptions, half_masks, regional_guidance, split_pair_caption
from sampling.settings import SamplerSettings

PAIR = "a cat in the top left and a robot in the bottom right on a pink background"


@pytest.mark.parametrize(
    "caption, expected",
    [
        (
            PAIR,
            (
                ("a cat in the top left on a pink background", "top_left"),
                ("a robot in the bottom right on a pink background", "bottom_right"),
            ),
        ),
        (
            "a small red circle at the upper right, and a blue square in the lower left",
            (
                ("a small red circle at the upper right", "top_right"),
                ("a blue square in the lower left", "bottom_left"),
            ),
        ),
    ],
)
def test_a_pair_caption_splits_into_one_caption_per_subject(caption, expected):
    assert split_pair_caption(caption) == expected


@pytest.mark.parametrize(
    "caption",
    [
        "a cat in the top left on a pink background",  # one place
        "a cat in the top left and in the bottom right",  # no second subject
        "a cat in the top left beside a dog in the bottom right",  # no conjunction after the first place
        "a cat in the top left, a dog in the middle and a fox in the bottom right",  # three places
        "a cat and a dog",
    ],
)
def test_other_captions_are_not_split(caption):
    assert split_pair_caption(caption) is None


def test_half_masks_weigh_each_place_to_its_caption():
    masks = half_masks((("a", "top_left"), ("b", "bottom_right")), 32, 32)
    assert masks.shape == (2, 1, 32, 32)
    assert torch.allclose(masks.sum(0), torch.ones(1, 32, 32))
    for (x, y), weight in ((POSITIONS["top_left"], 1.0), (POSITIONS["bottom_right"], 0.0)):
        assert masks[0, 0, int(y * 32), int(x * 32)].item() == pytest.approx(weight, abs=0.02)
    # the diagonal bisector is the boundary: its pixels are shared evenly, the picture's halves mirror each other
    assert masks[0, 0, 31, 0].item() == pytest.approx(0.5, abs=1e-4)
    assert torch.allclose(masks[0, 0], 1 - masks[0, 0].flip(0).flip(1), atol=1e-5)


class RowModel:
    """A stand-in model whose output row i is filled with value[i] (eps and variance channels alike)."""

    def __init__(self):
        self.rows = []

    def __call__(self, x, t, value):
        assert x.shape[0] == t.shape[0] == value.shape[0]
        self.rows.append(x.shape[0])
        return value[:, None, None, None].expand(-1, 2 * x.shape[1], *x.shape[2:]).clone()


def test_regional_guidance_mixes_the_two_captions_by_half_then_guides():
    captions = ["a red circle in the middle", PAIR]
    regions = RegionalCaptions(captions)
    assert regions.rows == [1]
    assert regions.conditional_captions(captions) == [
        "a red circle in the middle",
        "a cat in the top left on a pink background",
        "a robot in the bottom right on a pink background",
    ]
    model = RowModel()
    # conditional rows: image 0, image 1's first half, image 1's second half; then the two unconditional rows
    value = torch.tensor([1.0, 2.0, 4.0, 0.5, 0.25])
    x, t = torch.zeros(2, 3, 8, 8), torch.tensor([10, 10])
    scale = 3.0
    out = regional_guidance(model, scale, regions, 8, 8)(x, t, value=value)
    assert model.rows == [5]
    w = half_masks(regions.splits[0], 8, 8)[0]
    assert torch.allclose(out[0, :3], torch.full((3, 8, 8), 0.5 + scale * (1.0 - 0.5)))
    mixed = w * 2.0 + (1 - w) * 4.0
    assert torch.allclose(out[1, :3], (0.25 + scale * (mixed - 0.25)).expand(3, -1, -1))
    assert torch.allclose(out[1, 3:], mixed.expand(3, -1, -1))  # the mixed conditional variance

    unguided = regional_guidance(RowModel(), None, regions, 8, 8)(x, t, value=value[:3])
    assert torch.allclose(unguided[1, :3], mixed.expand(3, -1, -1))


def test_a_pair_caption_runs_both_halves_through_the_model(tiny_models):
    """One pair and one single image: three conditional rows and two unconditional ones per model call; with
    placement off (or for the upsampler stage) the pair caption is guided whole."""
    models = load_models(str(tiny_models["pipeline"]), torch.device("cpu"), use_upsampler=False)
    calls = []
    forward = models.base.model.forward

    def counting(x, t, **kwargs):
        calls.append(x.shape[0])
        return forward(x, t, **kwargs)

    models.base.model.forward = counting
    prompts = ["a red circle in the middle", PAIR]
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    for placement, rows in ((True, 5), (False, 4)):
        calls.clear()
        settings = SamplerSettings(steps=3, guidance=3.0, placement=placement).check(1000)
        x, truncated = run_stage(models.base, settings, prompts, generators, torch.device("cpu"))
        assert x.shape[0] == len(truncated) == 2
        assert calls and set(calls) == {rows}


def test_parameters_record_the_two_captions_of_a_pair(tiny_models):
    models = load_models(str(tiny_models["pipeline"]), torch.device("cpu"), use_upsampler=False)
    on = TextToImage(models, torch.device("cpu"))
    off = TextToImage(models, torch.device("cpu"), base=SamplerSettings(placement=False))
    params = on.parameters(PAIR, 1)
    assert params["placement"] == ["top_left", "bottom_right"]
    assert params["regions"] == [
        "a cat in the top left on a pink background",
        "a robot in the bottom right on a pink background",
    ]
    assert "regions" not in on.parameters("a cat in the top left", 1)
    assert "regions" not in off.parameters(PAIR, 1)
