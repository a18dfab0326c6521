"""Non-square shard sets: `--sizes 32,48x32` writes DIR/48x32/ beside DIR/32/, same keys, every existing reader."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_pipeline import images
from data_pipeline.cli import parse_sizes
from data_pipeline.runner import build_dataset
from data_pipeline.shard_report import inspect_dataset
from data_pipeline.shards import WriterConfig, iter_tar_samples, normalize_size, plan_shards, shard_is_complete
from data_pipeline.synthetic import read_scene
from tests.data_pipeline.test_shards_writer import good_items, produce_items


def _decoded(out_dir, size) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(glob.glob(os.path.join(out_dir, str(size), "*.tar"))):
        for key, files in iter_tar_samples(path):
            out[key] = cv2.imdecode(np.frombuffer(files["jpg"], np.uint8), cv2.IMREAD_COLOR)
    return out


def test_sizes_name_squares_as_ints_and_shapes_as_wxh():
    assert parse_sizes("32, 48x32,32x32,16X64") == (32, "48x32", 32, "16x64")
    assert normalize_size("64") == 64 and normalize_size(" 24x12 ") == "24x12"
    config = WriterConfig("/tmp/x", sizes=(64, "48x32", 32, "32x32", "16x64"))
    assert config.sizes == ("16x64", 32, "48x32", 64)  # deduplicated, smallest area (then width) first
    assert config.largest_side == 64
    assert config.fingerprint()["sizes"] == json.loads(json.dumps(config.fingerprint()))["sizes"]
    for bad in ("0x32", "48x", "x", "4.5", "-3"):
        with pytest.raises(ValueError):
            normalize_size(bad)


def test_shape_sets_hold_the_same_keys_resized_with_the_resize_mode(tmp_path, image_bytes):
    items = good_items(image_bytes, 5)
    config = WriterConfig(tmp_path / "ds", sizes=(16, "32x16", "16x32"), shard_size=3)
    _, manifest = build_dataset(plan_shards(items, 3), produce_items, config, progress=False)
    assert manifest["sizes"] == [16, "16x32", "32x16"] and manifest["totals"]["samples"] == 5
    sets = {size: _decoded(config.out_dir, size) for size in config.sizes}
    assert sets[16].keys() == sets["32x16"].keys() == sets["16x32"].keys() and len(sets[16]) == 5
    assert {img.shape for img in sets["32x16"].values()} == {(16, 32, 3)}
    assert {img.shape for img in sets["16x32"].values()} == {(32, 16, 3)}
    assert all(shard_is_complete(config, sid) for sid in (0, 1))
    padded = WriterConfig(tmp_path / "pad", sizes=("40x10",), shard_size=3, resize_mode="pad", pad_color=(0, 0, 255))
    build_dataset(plan_shards(items[:1], 3), produce_items, padded, progress=False)
    (img,) = _decoded(padded.out_dir, "40x10").values()
    assert img.shape == (10, 40, 3) and img[5, 0, 0] > 200  # a 40x30 original fits 13x10, padded blue (BGR)


def test_resize_to_crops_or_pads_to_the_target_shape():
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, :20] = 255
    crop = images.resize_to(wide, 20, 10, "center_crop")
    assert crop.shape == (10, 20, 3) and crop[:, :10].min() == 255 and crop[:, 10:].max() == 0
    square = images.resize_to(wide, 10, 10, "center_crop")
    assert square.shape == (10, 10, 3) and square[:, :5].min() == 255
    assert images.resize_square(wide, 10).tolist() == square.tolist()


def test_synthetic_aspect_writes_whole_non_square_scenes_readable_by_inspect(tmp_path):
    out = tmp_path / "wide"
    done = subprocess.run(
        [sys.executable, "-m", "data_pipeline", "synthetic", "--out", str(out), "--count", "12", "--sizes",
         "32,64x32", "--aspect", "2:1", "--shard-size", "5", "--processes", "1", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"][0]["aspect"] == 2.0 and manifest["sources"][0]["render_size"] == [32, 64]
    for path in sorted(glob.glob(str(out / "64x32" / "*.tar"))):
        for _, files in iter_tar_samples(path):
            rgb = cv2.imdecode(np.frombuffer(files["png"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
            attributes = json.loads(files["json"])["attributes"]
            assert rgb.shape == (32, 64, 3) and attributes["aspect"] == 2.0
            read = read_scene(rgb)
            assert {k: read[k] for k in ("shape", "color", "position")} == {
                k: attributes[k] for k in ("shape", "color", "position")
            }
    report = inspect_dataset(str(out))
    assert report["sizes"] == [32, "64x32"] and report["inspected_size"] == "64x32"
    assert inspect_dataset(str(out), size="32")["inspected_size"] == 32


def test_shape_sets_load_in_webdataset_and_hf_datasets(tmp_path, image_bytes):
    import datasets
    import webdataset as wds

    config = WriterConfig(tmp_path / "ds", sizes=(24, "48x24"), shard_size=3, image_format="png")
    build_dataset(plan_shards(good_items(image_bytes, 5), 3), produce_items, config, progress=False)
    urls = sorted(glob.glob(os.path.join(config.out_dir, "48x24", "*.tar")))
    loaded = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("__key__", "png"))
    assert len(loaded) == 5 and {rgb.shape for _, rgb in loaded} == {(24, 48, 3)}
    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 5 and ds[0]["png"].size == (48, 24)


def test_bad_shape_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "data_pipeline", "synthetic", "--out", str(tmp_path / "o"), "--sizes", "32x0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "WxH" in done.stderr and "Traceback" not in done.stderr
