"""Subject placement: position phrases, finding the subject, the samplers' steer hook, and the bundled base drawing
a subject where its caption says (which it does not do on its own)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from data_pipeline.synthetic import read_scene, render
from data_pipeline.synthetic.world import POSITIONS
from finetune.diffusion.samplers import SAMPLERS, move_pixels, sample
from sampling.loading import load_models
from sampling.pipeline import TextToImage
from sampling.placement import (
    Placement,
    named_position,
    named_positions,
    pair_sources,
    placement_names,
    subject_box,
    subject_boxes,
)
from sampling.settings import SamplerSettings


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a large red circle in the top left on a white background", "top_left"),
        ("gray background, blue square at upper-right", "top_right"),
        ("In The Top-Left Corner, a green triangle on pink", "top_left"),
        ("a red circle at the lower right, cyan background", "bottom_right"),
        ("a yellow circle in the centre on gray", "center"),
        ("a yellow circle, middle, on gray", "center"),
        ("bottom  left: a purple square", "bottom_left"),
        ("a red circle on a white background", None),  # no position
        ("a red circle in the top left and a blue one in the bottom right", None),  # two: ambiguous
        ("a topleftish blob", None),  # not a word of its own
    ],
)
def test_named_position(caption, expected):
    assert named_position(caption) == expected


def test_named_positions_in_caption_order():
    pair = "a cat in the bottom right and a robot at the upper left on a pink background"
    assert named_positions(pair) == ["bottom_right", "top_left"] == placement_names(pair)
    assert placement_names("a red circle in the top left") == ["top_left"]
    assert placement_names("a red circle") == []
    assert placement_names("top left, top right and the center") == []  # three: left alone


def rolled(h: int, w: int, dy: int, dx: int) -> torch.Tensor:
    """The source map of a roll by (dy, dx), for one image."""
    return torch.roll(torch.arange(h * w).reshape(h, w), (dy, dx), dims=(0, 1)).reshape(1, h * w)


def subject_centre(image: np.ndarray) -> tuple[float, float] | None:
    """(x, y) in pixels of the centre of the subject's box; None when there is none."""
    box = subject_box(image)
    return None if box is None else (box[0] + box[2] / 2, box[1] + box[3] / 2)


def _scene(position: str, x: float, y: float, background: str = "white") -> np.ndarray:
    attributes = {
        "shape": "triangle",
        "color": "red",
        "size": "small",
        "position": position,
        "background": background,
        "style": "plain",
        "x": x,
        "y": y,
        "diameter": 0.3,
    }
    return render(attributes, 32).astype(np.float32) / 127.5 - 1


def test_subject_centre_is_the_bounding_box_centre():
    cx, cy = subject_centre(_scene("top_left", 0.3, 0.7))
    assert cx == pytest.approx(0.3 * 32, abs=1.0) and cy == pytest.approx(0.7 * 32, abs=1.0)


def test_the_subject_of_an_emoji_scene_is_found_where_it_was_drawn():
    """Placement also serves the emoji pipeline: an OpenMoji glyph (many colours, outlines) is one subject."""
    from data_pipeline.emoji_world import DEFAULT_EMOJI_WORLD, make_emoji_scene

    world = dataclasses.replace(DEFAULT_EMOJI_WORLD, pair_p=0.0)
    found = 0
    for i in range(60):
        image, _, attributes = make_emoji_scene(i, seed=5, world=world, size=32)
        subject, centre = attributes["subjects"][0], subject_centre(image.astype(np.float32) / 127.5 - 1)
        found += (
            centre is not None and abs(centre[0] / 32 - subject["x"]) < 0.1 and abs(centre[1] / 32 - subject["y"]) < 0.1
        )
    assert found >= 57  # 499 of 500 measured with the bundled-emoji world


def test_no_subject_in_a_plain_or_busy_picture():
    plain = np.full((32, 32, 3), 0.5, np.float32)
    assert subject_centre(plain) is None
    noise = np.random.default_rng(0).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
    assert subject_centre(noise) is None


def test_placement_shifts_each_image_to_its_target_inside_its_window():
    images = torch.from_numpy(np.stack([_scene("center", 0.5, 0.5), _scene("center", 0.5, 0.5)])).permute(0, 3, 1, 2)
    placement = Placement([[POSITIONS["top_left"]], []], num_timesteps=1000)
    sources = placement(800, images)
    assert sources[1].tolist() == list(range(32 * 32))  # no target: left alone
    assert torch.equal(sources[:1], rolled(32, 32, *placement_shift(images[0])))  # one subject: the image rolls
    moved = move_pixels(images, sources)[0].permute(1, 2, 0).numpy()
    cx, cy = subject_centre(moved)
    assert cx == pytest.approx(0.27 * 32, abs=1.0) and cy == pytest.approx(0.27 * 32, abs=1.0)
    assert placement(999, images) is None and placement(100, images) is None  # too early, too late


def test_placement_from_captions_only_when_one_names_a_position():
    assert Placement.from_captions(["a red circle", "a blue square on gray"], 1000) is None
    placement = Placement.from_captions(["a red circle", "a blue square in the bottom right"], 1000)
    assert placement.targets == [[], [POSITIONS["bottom_right"]]]
    pair = Placement.from_captions(["a cat in the top left and a dog in the bottom right"], 1000)
    assert pair.targets == [[POSITIONS["top_left"], POSITIONS["bottom_right"]]]


def test_move_pixels_checks_the_sources_shape():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3)
    assert move_pixels(x, None) is x
    moved = move_pixels(x, torch.cat([rolled(2, 3, 0, 1), rolled(2, 3, 1, 0)]))
    assert torch.equal(moved[0], torch.roll(x[0], 1, dims=-1)) and torch.equal(moved[1], torch.roll(x[1], 1, dims=-2))
    with pytest.raises(ValueError, match="one source index per pixel"):
        move_pixels(x, torch.zeros(3, 6, dtype=torch.long))


def placement_shift(image: torch.Tensor) -> tuple[int, int]:
    """The (dy, dx) that brings the subject of a [3, 32, 32] image to the top-left place."""
    left, top, width, height = subject_box(image.permute(1, 2, 0).numpy())
    return round(0.27 * 32 - (top + height / 2)), round(0.27 * 32 - (left + width / 2))


def _two_subjects(boxes: list[tuple[int, int, int]], side: int = 32) -> np.ndarray:
    """A white (H, W, 3) image in [-1, 1] with a differently coloured square (left, top, size) for each box."""
    image = np.ones((side, side, 3), np.float32)
    for (left, top, size), colour in zip(boxes, ((1, -1, -1), (-1, -1, 1))):
        image[top : top + size, left : left + size] = colour
    return image


def _centres(image: np.ndarray) -> list[tuple[float, float]]:
    return sorted((b[0] + b[2] / 2, b[1] + b[3] / 2) for b in subject_boxes(image, 2))


@pytest.mark.parametrize(
    ("boxes", "targets"),
    [
        ([(2, 2, 8), (22, 2, 8)], ("bottom_left", "bottom_right")),  # far: each trades places with its destination
        ([(2, 2, 8), (22, 2, 8)], ("bottom_right", "bottom_left")),  # the caption's order does not matter
        ([(5, 14, 8), (20, 3, 8)], ("top_left", "bottom_right")),  # near: rolled inside the rectangle covering both
    ],
)
def test_two_subjects_go_to_the_two_places_and_the_pixels_are_only_rearranged(boxes, targets):
    image = _two_subjects(boxes)
    sources = pair_sources(image, [POSITIONS[t] for t in targets])
    assert sorted(sources.ravel().tolist()) == list(range(32 * 32))  # a permutation: noise stays noise
    moved = image.reshape(-1, 3)[sources.ravel()].reshape(image.shape)
    wanted = sorted((POSITIONS[t][0] * 32, POSITIONS[t][1] * 32) for t in targets)
    for (x, y), (wx, wy) in zip(_centres(moved), wanted):
        assert abs(x - wx) <= 1 and abs(y - wy) <= 1
    assert sorted(map(tuple, moved.reshape(-1, 3).tolist())) == sorted(map(tuple, image.reshape(-1, 3).tolist()))


def test_a_move_that_would_disturb_the_other_subject_waits():
    """Moving the red square to the top-left place would roll the blue one beside it: only the blue one moves (the
    red one follows at a later step)."""
    image = _two_subjects([(2, 2, 6), (9, 9, 6)])
    sources = pair_sources(image, [POSITIONS["top_left"], POSITIONS["bottom_right"]])
    moved = image.reshape(-1, 3)[sources.ravel()].reshape(image.shape)
    red = np.argwhere((moved == (1, -1, -1)).all(-1))
    blue = np.argwhere((moved == (-1, -1, 1)).all(-1))
    assert red.mean(0).tolist() == [4.5, 4.5]  # unmoved
    assert abs(blue.mean(0)[0] - 0.73 * 32) <= 1 and abs(blue.mean(0)[1] - 0.73 * 32) <= 1


def test_fewer_than_two_subjects_leave_a_pair_caption_alone():
    one = _two_subjects([(2, 2, 8)])
    assert pair_sources(one, [POSITIONS["bottom_left"], POSITIONS["bottom_right"]]) is None
    placed = _two_subjects([(6, 6, 6), (20, 20, 6)])  # already there
    assert pair_sources(placed, [POSITIONS["top_left"], POSITIONS["bottom_right"]]) is None


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_steers_at_decreasing_timesteps_but_not_after_its_last_step(sampler):
    seen = []

    def model_fn(x, t, **_):
        return torch.zeros(x.shape[0], 6, *x.shape[2:])

    def steer(t, pred_xstart):
        seen.append(t)
        return torch.cat([rolled(8, 8, 1, 0)] * pred_xstart.shape[0])

    generator = torch.Generator().manual_seed(0)
    steps = 5 if sampler.startswith("dpmpp") else "5"
    sample(None, model_fn, (2, 3, 8, 8), sampler=sampler, steps=steps, generator=generator, steer=steer)
    assert len(seen) == 4 and seen == sorted(seen, reverse=True) and seen[-1] > 0


def test_steering_rolls_the_state():
    """With a model that predicts x0 = 0, DDIM's state after a step is a scaled copy of the previous one, so a
    steered run equals the unsteered run rolled by the total shift."""

    def model_fn(x, t, **_):
        return torch.zeros(x.shape[0], 6, *x.shape[2:])

    def run(steer):
        return sample(
            None,
            model_fn,
            (1, 3, 8, 8),
            sampler="ddim",
            steps="4",
            generator=torch.Generator().manual_seed(3),
            steer=steer,
            clip_denoised=False,
        )

    plain = run(None)
    steered = run(lambda t, x0: rolled(8, 8, 0, 1))
    assert torch.allclose(steered, torch.roll(plain, 3, dims=-1))


def test_bundled_base_draws_the_subject_where_the_caption_says():
    """The bundled base ignores position words (docs/quality/README.md); with placement (the default) the same
    seeds put each subject in its place, and shape, colour and background stay as the caption says."""
    torch.set_num_threads(1)
    models = load_models("bundled", torch.device("cpu"), use_upsampler=False)
    cases = [
        ("a large red square in the top left on a white background", "top_left"),
        ("a small blue circle in the bottom right on a gray background", "bottom_right"),
        ("a large green triangle in the center on a cyan background", "center"),
        ("a small yellow square in the top right on a pink background", "top_right"),
    ]
    prompts = [c for c, _ in cases]
    reads = {}
    for placement in (True, False):
        settings = SamplerSettings(steps=15, guidance=5, placement=placement)
        pipeline = TextToImage(models, torch.device("cpu"), base=settings)
        images = pipeline.generate(prompts, [11, 12, 13, 14], batch_size=4, progress=False)
        reads[placement] = [read_scene(np.asarray(g.image)) for g in images]
    placed = reads[True]
    assert [r["position"] for r in placed] == [p for _, p in cases]
    for read, caption in zip(placed, prompts):
        assert f"{read['color']} {read['shape']}" in caption and f"on a {read['background']}" in caption
    assert [r["position"] for r in reads[False]] != [p for _, p in cases]


def test_parameters_record_the_placement_only_where_a_subject_is_moved(tiny_models):
    models = load_models(str(tiny_models["pipeline"]), torch.device("cpu"), use_upsampler=False)
    on = TextToImage(models, torch.device("cpu"))
    off = TextToImage(models, torch.device("cpu"), base=SamplerSettings(placement=False))
    caption = "a red circle in the top left"
    assert on.parameters(caption, 1)["placement"] == "top_left"
    assert "placement" not in on.parameters("a red circle", 1)
    assert "placement" not in off.parameters(caption, 1)
    assert "placement" not in on.parameters(caption, 1, inpainting=True)


def test_a_subject_is_never_moved_across_the_canvas_edge():
    """A 10 px subject on a 20 px side, sent to the top-left place (0.27 = 5.4 px): its box stops a pixel inside."""
    from sampling.placement import _shift

    start, extent, side = 5, 10, 20
    moved = start + _shift(0.27, start, extent, side)
    assert moved == 1  # box [1, 11): inside; centred on 5.4 px it would start at 0.4 and wrap past the edge
    assert _shift(0.73, 11, 4, 32) == round(0.73 * 32 - 13)  # a small subject goes exactly to its place
