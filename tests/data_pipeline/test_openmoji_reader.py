"""The emoji world's evaluator: reading rendered scenes back, and scoring."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.emoji_world import (
    DEFAULT_EMOJI_WORLD,
    make_emoji_scene,
    read_emoji_scene,
    read_emoji_scenes,
    score_emoji_reads,
)


def _scenes(count: int, size: int, seed: int):
    return [
        make_emoji_scene(i, seed=seed, size=size, style="comic" if i % 2 else "plain", captions_per_image=1)
        for i in range(count)
    ]


def test_reads_rendered_scenes_at_64px():
    scenes = _scenes(100, 64, seed=21)
    figures = score_emoji_reads(read_emoji_scenes(s[0] for s in scenes), [s[2] for s in scenes])
    assert figures["n"] == 100
    for key in ("count", "emoji", "position", "size", "background", "style", "all"):
        assert figures[key] >= 0.95, figures


def test_reads_most_rendered_scenes_at_32px():
    scenes = _scenes(40, 32, seed=22)
    figures = score_emoji_reads(read_emoji_scenes(s[0] for s in scenes), [s[2] for s in scenes])
    assert figures["background"] == 1.0 and figures["all"] >= 0.8, figures  # about 0.9 on larger samples


def test_read_gives_geometry_close_to_the_truth():
    image, _, truth = make_emoji_scene(3, seed=5, size=64)
    read = read_emoji_scene(image)
    assert len(read["subjects"]) == len(truth["subjects"])
    for got, want in zip(read["subjects"], sorted(truth["subjects"], key=lambda s: (round(s["y"] * 2), s["x"]))):
        assert got["emoji"] == want["emoji"]
        assert abs(got["x"] - want["x"]) < 0.04 and abs(got["extent"] - want["extent"]) < 0.05


def test_empty_image_reads_no_emoji():
    read = read_emoji_scene(np.full((64, 64, 3), 245, np.uint8))
    assert read["subjects"] == [] and read["background"] == "white" and read["style"] == "plain"


def test_scoring_counts_wrong_reads():
    _, _, truth = make_emoji_scene(0, seed=1, world=DEFAULT_EMOJI_WORLD)
    wrong = {**truth, "background": "purple" if truth["background"] != "purple" else "white"}
    figures = score_emoji_reads([truth, wrong], [truth, truth])
    assert figures["background"] == 0.5 and figures["emoji"] == 1.0 and figures["all"] == 0.5
    moved = {
        **truth,
        "subjects": [{**s, "emoji": "ghost" if s["emoji"] != "ghost" else "cat"} for s in truth["subjects"]],
    }
    figures = score_emoji_reads([moved], [truth])
    assert figures["emoji"] == 0.0 and figures["all"] == 0.0 and figures["position"] == figures["size"] == 1.0
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        score_emoji_reads([truth, truth], [truth])
    with pytest.raises(ValueError, match="subjects"):
        score_emoji_reads([truth], [{"background": "white"}])


def test_reads_upsampler_sized_images():
    scenes = _scenes(6, 256, seed=23)
    figures = score_emoji_reads(read_emoji_scenes(s[0] for s in scenes), [s[2] for s in scenes])
    assert figures["all"] == 1.0, figures


def test_reads_soft_generated_looking_scenes():
    """A generator's output is soft: blurred edges and halftone dots, a little noise."""
    import cv2

    rng = np.random.default_rng(0)
    scenes = _scenes(40, 64, seed=24)
    images = [
        np.clip(cv2.GaussianBlur(s[0].astype(np.float32), (0, 0), 1.0) + rng.normal(0, 6, s[0].shape), 0, 255)
        for s in scenes
    ]
    figures = score_emoji_reads(read_emoji_scenes(img.astype(np.uint8) for img in images), [s[2] for s in scenes])
    for key in ("count", "position", "size", "background", "style"):
        assert figures[key] >= 0.95, figures
    assert figures["emoji"] >= 0.9, figures
