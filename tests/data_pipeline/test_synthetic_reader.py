"""The evaluator: reading scenes back from rendered (and lightly degraded) images, and scoring."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from data_pipeline.synthetic import (
    DEFAULT_WORLD,
    PALETTE,
    SHAPE_NAMES,
    make_scene,
    make_world,
    read_scene,
    read_scenes,
    score,
    score_reads,
)

FULL_WORLD = make_world(shapes=len(SHAPE_NAMES), colors=10, backgrounds=10, sizes=3)
ATTRS = ("shape", "color", "background", "position", "size", "style")


def _dataset(world, size, n, seed):
    """n scenes alternating plain and comic."""
    return [make_scene(i, seed=seed, world=world, size=size, style="comic" if i % 2 else "plain") for i in range(n)]


def _degrade(image, rng, noise=8.0, drift=15.0, blur=0.5):
    """What a small generator gets wrong: soft edges, colours off the palette, pixel noise."""
    img = cv2.GaussianBlur(image.astype(np.float32), (0, 0), blur)
    img += rng.uniform(-drift, drift, 3) + rng.normal(0, noise, img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [32, 64])
def test_reads_rendered_scenes_of_the_default_world_at_least_98_percent(size):
    scenes = _dataset(DEFAULT_WORLD, size, 240, seed=11)
    result = score([img for img, _, _ in scenes], [a for _, _, a in scenes], DEFAULT_WORLD)
    for attr in ATTRS:
        assert result[attr] >= 0.98, (attr, result)
    assert result["all_three"] >= 0.98
    assert result["style_rate"] == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("size", [32, 64])
def test_reads_the_full_vocabulary(size):
    scenes = _dataset(FULL_WORLD, size, 160, seed=12)
    result = score([img for img, _, _ in scenes], [a for _, _, a in scenes], FULL_WORLD)
    for attr in ATTRS:
        assert result[attr] >= 0.97, (attr, result)


@pytest.mark.parametrize("size", [32, 64])
def test_tolerates_noise_colour_drift_and_blur(size):
    rng = np.random.default_rng(0)
    scenes = _dataset(DEFAULT_WORLD, size, 160, seed=13)
    result = score([_degrade(img, rng) for img, _, _ in scenes], [a for _, _, a in scenes], DEFAULT_WORLD)
    for attr in ATTRS:
        assert result[attr] >= 0.95, (attr, result)


def test_style_detector_separates_plain_from_comic():
    plain = [make_scene(i, seed=14, size=32, style="plain")[0] for i in range(60)]
    comic = [make_scene(i, seed=14, size=32, style="comic")[0] for i in range(60)]
    plain_reads, comic_reads = read_scenes(plain), read_scenes(comic)
    assert all(r["style"] == "plain" for r in plain_reads)
    assert all(r["style"] == "comic" for r in comic_reads)
    assert max(r["outline_score"] for r in plain_reads) < 0.2 < 0.8 < min(r["outline_score"] for r in comic_reads)
    assert max(r["halftone_score"] for r in plain_reads) < 0.05
    assert min(r["halftone_score"] for r in comic_reads) > 0.15


def test_each_comic_cue_alone_is_detected():
    comic, _, attrs = make_scene(3, seed=15, size=64, style="comic")
    plain = make_scene(3, seed=15, size=64, style="plain")[0]
    # Halftone only: the plain scene with the comic background copied in away from the shape.
    shape = np.any(plain != PALETTE[attrs["background"]], axis=2).astype(np.uint8)
    away = ~cv2.dilate(shape, np.ones((11, 11), np.uint8)).astype(bool)
    halftone_only = plain.copy()
    halftone_only[away] = comic[away]
    r = read_scene(halftone_only)
    assert r["outline_score"] < 0.2 and r["halftone_score"] > 0.15 and r["style"] == "comic"
    # Outline only: the plain scene with the comic's dark outline pixels drawn onto it.
    outline_only = plain.copy()
    outline_only[comic.astype(int).sum(axis=2) < 60] = 0
    r = read_scene(outline_only)
    assert r["halftone_score"] < 0.05 and r["outline_score"] > 0.8 and r["style"] == "comic"


def test_empty_image_and_stray_blobs():
    blank = np.full((32, 32, 3), PALETTE["gray"], np.uint8)
    r = read_scene(blank)
    assert r["background"] == "gray" and r["shape"] is None and r["color"] is None and r["style"] == "plain"
    # A large red circle plus a small red speck elsewhere: the largest blob is the shape.
    image, _, attrs = make_scene(0, seed=16, size=64, world=make_world(colors="red", sizes="large"))
    corner = (4, 60) if attrs["x"] < 0.5 else (4, 4)
    image[corner[1] - 2 : corner[1] + 1, corner[0] : corner[0] + 3] = PALETTE["red"]
    r = read_scene(image, make_world(colors="red", sizes="large"))
    assert (r["shape"], r["position"]) == (attrs["shape"], attrs["position"])


def test_accepts_float_pil_and_path_inputs(tmp_path):
    image, _, attrs = make_scene(4, seed=17, size=64, style="comic")
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    reads = read_scenes([image.astype(np.float32) / 255, Image.fromarray(image), path, str(path)])
    for r in reads:
        assert {k: r[k] for k in ATTRS} == {k: attrs[k] for k in ATTRS}
    batch = np.stack([image, image])
    assert len(read_scenes(batch)) == 2


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((12, 48, 3), np.uint8), "too small"),
        (np.zeros((32, 32), np.uint8), "RGB image"),
        (np.zeros((8, 8, 3), np.uint8), "too small"),
        (np.full((32, 32, 3), -1.0, np.float32), r"\[0, 1\]"),
    ],
)
def test_bad_images_are_refused(image, message):
    with pytest.raises(ValueError, match=message):
        read_scene(image)


def test_scoring_counts_each_attribute_and_all_three():
    scenes = [make_scene(i, seed=18, size=32, style="plain") for i in range(20)]
    images = [img for img, _, _ in scenes]
    targets = [dict(a) for _, _, a in scenes]
    reads = read_scenes(images)
    assert score_reads(reads, targets)["all_three"] == 1.0
    # Wrong colour for the first 5 targets, wrong position for the next 5.
    for t in targets[:5]:
        t["color"] = next(c for c in DEFAULT_WORLD.colors if c not in (t["color"], t["background"]))
    for t in targets[5:10]:
        t["position"] = next(p for p in DEFAULT_WORLD.positions if p != t["position"])
    result = score_reads(reads, targets)
    assert result["n"] == 20
    assert result["color"] == 0.75 and result["position"] == 0.75 and result["shape"] == 1.0
    assert result["all_three"] == 0.75 and result["style"] == 1.0 and result["style_rate"] == 0.0
    # Targets naming only the content get only those figures.
    content = [{k: t[k] for k in ("shape", "color", "background")} for t in targets]
    assert set(score_reads(reads, content)) == {"n", "shape", "color", "background", "all_three", "style_rate"}
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        score(images[:2], targets[:1])
    with pytest.raises(ValueError, match="missing: background"):
        score_reads(reads[:1], [{"shape": "circle", "color": "red"}])


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (48, 96)])
def test_reads_rendered_non_square_scenes_at_least_99_percent(shape):
    """A 2:1 or 1:2 canvas: positions are relative to the canvas ("top left" is its own top-left corner)."""
    scenes = [
        make_scene(i, seed=31, world=FULL_WORLD, size=shape, style="comic" if i % 2 else "plain") for i in range(200)
    ]
    assert all(image.shape == (*shape, 3) for image, _, _ in scenes)
    reads = read_scenes([image for image, _, _ in scenes], FULL_WORLD)
    for attr in ATTRS:
        right = np.mean([r[attr] == a[attr] for r, (_, _, a) in zip(reads, scenes)])
        assert right >= 0.99, (shape, attr, right)


def test_non_square_positions_follow_the_canvas_corners():
    world = make_world(positions="top_left,bottom_right", sizes="small")
    for index in range(10):
        image, _, attrs = make_scene(index, seed=5, world=world, size=(32, 96))
        assert attrs["aspect"] == 3.0
        mask = np.any(np.abs(image.astype(int) - PALETTE[attrs["background"]]) > 60, axis=2)
        ys, xs = np.nonzero(mask)
        left_half = xs.mean() < 48
        top_half = ys.mean() < 16
        assert (left_half and top_half) == (attrs["position"] == "top_left"), attrs
        assert read_scene(image, world)["position"] == attrs["position"]
