"""Decoding untrusted image bytes, square resizing and perceptual hashes."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline import images
from data_pipeline.phash import find_near_duplicates, hamming, phash

GOOD = ("jpg", "png", "webp", "cmyk", "gray", "gray16", "rgba", "palette_alpha", "la", "animated_gif")


@pytest.mark.parametrize("kind", GOOD)
def test_decode_handles_every_mode_as_rgb(kind, image_bytes, make_pattern):
    rgb, size = images.decode_image(image_bytes(kind, 48, 40, seed=3))
    assert size == (48, 40)
    assert rgb.shape == (40, 48, 3) and rgb.dtype == np.uint8
    if kind in ("jpg", "png", "webp", "cmyk"):
        # colour content survives (lossy formats within a tolerance)
        diff = np.abs(rgb.astype(int) - make_pattern(48, 40, seed=3).astype(int)).mean()
        assert diff < 6, diff
    if kind in ("gray", "gray16", "la"):
        assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
        assert rgb.max() > 100  # 16-bit values are scaled, not clipped to white or black


def test_alpha_is_composited_on_white_and_animation_gives_first_frame(image_bytes):
    rgb, _ = images.decode_image(image_bytes("rgba", seed=1))
    assert rgb.min() >= 127  # 50% alpha over white can't be darker than half grey
    rgb, _ = images.decode_image(image_bytes("animated_gif"))
    assert tuple(rgb[5, 5]) == (255, 0, 0)


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("truncated", images.TRUNCATED_IMAGE),
        ("corrupt", images.CORRUPT_IMAGE),
        ("html", images.NOT_AN_IMAGE),
        ("empty", images.EMPTY_IMAGE),
        ("bomb", images.DECOMPRESSION_BOMB),
    ],
)
def test_bad_bytes_raise_with_reason(kind, reason, image_bytes):
    with pytest.raises(images.ImageError) as info:
        images.decode_image(image_bytes(kind))
    assert info.value.reason == reason
    if kind == "html":
        assert "HTML" in info.value.detail


def test_min_side_and_max_pixels(image_bytes):
    with pytest.raises(images.ImageError) as info:
        images.decode_image(image_bytes("png", 20, 10), min_side=16)
    assert info.value.reason == images.IMAGE_TOO_SMALL
    with pytest.raises(images.ImageError) as info:
        images.decode_image(image_bytes("png", 100, 100), max_pixels=5000)
    assert info.value.reason == images.DECOMPRESSION_BOMB


def test_draft_decodes_large_jpeg_smaller_but_reports_original_size(make_pattern):
    data = images.encode_image(make_pattern(800, 600, seed=2), "jpg")
    rgb, size = images.decode_image(data, draft_side=64)
    assert size == (800, 600)
    assert 64 <= min(rgb.shape[:2]) < 600


def test_center_crop_and_pad():
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, 25:75] = 255  # white middle half
    crop = images.resize_square(img, 20, "center_crop")
    assert crop.shape == (20, 20, 3)
    assert crop.min() == 255  # only the white centre remains
    padded = images.resize_square(img, 20, "pad", pad_color=(0, 0, 255))
    assert padded.shape == (20, 20, 3)
    assert tuple(padded[0, 10]) == (0, 0, 255) and tuple(padded[19, 10]) == (0, 0, 255)  # bands top/bottom
    assert tuple(padded[10, 10]) == (255, 255, 255)
    up = images.resize_square(np.full((4, 6, 3), 7, np.uint8), 12)
    assert up.shape == (12, 12, 3) and np.all(up == 7)


def test_shrinking_uses_area_interpolation():
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    rgb = np.repeat(checker[:, :, None], 3, axis=2)
    small = images.resize_square(rgb, 8)
    assert np.all(np.abs(small.astype(int) - 127) <= 1)  # averaged, not aliased to black/white


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
def test_encode_round_trip(fmt, make_pattern):
    rgb = make_pattern(32, 32, seed=5)
    back, _ = images.decode_image(images.encode_image(rgb, fmt))
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() < (0.01 if fmt == "png" else 4)


def test_phash_is_robust_to_resizing_and_separates_images(make_pattern):
    a = make_pattern(128, 128, seed=1)
    a_small = images.resize_square(a, 48)
    b = make_pattern(128, 128, seed=2)
    assert hamming(phash(a), phash(a_small)) <= 4
    assert hamming(phash(a), phash(b)) > 10


def test_near_duplicates_keep_the_smallest_key_and_ignore_order():
    pairs = [("c", 0b1111), ("a", 0b1110), ("b", 1 << 40), ("d", 0b1111), ("e", (1 << 40) | 1)]
    expected = {"c": "a", "d": "a", "e": "b"}
    assert find_near_duplicates(pairs, 1) == expected
    assert find_near_duplicates(list(reversed(pairs)), 1) == expected
    assert find_near_duplicates(pairs, 0) == {"d": "c"}
