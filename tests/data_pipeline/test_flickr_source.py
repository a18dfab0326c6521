"""`flickr30k ROOT` end to end with the original token file and Kaggle's results.csv / captions.txt."""

from __future__ import annotations

import glob
import json
import os

import pytest

from data_pipeline.__main__ import main
from data_pipeline.shards import iter_tar_samples
from data_pipeline.sources.flickr30k import Flickr30kError, find_layout, parse_captions

IMAGES = ["1000092795.jpg", "10002456.jpg", "1000268201.jpg", "2199200615.jpg"]


def _captions(image):
    return [f"caption {n} of {image[:-4]}" for n in range(5)]


def _write_images(folder, image_bytes, skip=()):
    folder.mkdir(parents=True)
    for i, name in enumerate(IMAGES):
        if name not in skip:
            (folder / name).write_bytes(image_bytes("jpg", 60 + 10 * i, 50, seed=i))


def _samples(out):
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "64", "*.tar"))):
        for key, files in iter_tar_samples(path):
            found[key] = json.loads(files["json"])
    return found


def test_token_layout_keeps_five_captions_in_order(tmp_path, image_bytes):
    root = tmp_path / "flickr30k"
    _write_images(root / "flickr30k-images", image_bytes, skip={"10002456.jpg"})
    lines = [f"{name}#{n}\t{_captions(name)[n]}" for name in IMAGES for n in (4, 2, 0, 1, 3)]  # numbers shuffled
    (root / "results_20130124.token").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert (
        main(["flickr30k", str(root), "--out", str(out), "--val-fraction", "0.5", "--no-progress", "--processes", "1"])
        == 0
    )
    samples = list(_samples(out).values())
    assert len(samples) == 3
    for meta in samples:
        name = f"{meta['attributes']['flickr_id']}.jpg"
        assert meta["captions"] == _captions(name)
        assert meta["caption"] == _captions(name)[0]
        assert meta["source"] == "flickr30k"
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["failures"] == {"missing_file": 1}
    assert manifest["sources"][0]["type"] == "flickr30k" and manifest["sources"][0]["items"] == 4


def test_kaggle_csv_layout_with_its_broken_row(tmp_path, image_bytes):
    root = tmp_path / "kaggle"
    _write_images(root / "flickr30k_images" / "flickr30k_images", image_bytes)
    lines = ["image_name| comment_number| comment"]
    for name in IMAGES:
        for n, caption in enumerate(_captions(name)):
            lines.append(
                f"{name}| {n}   {caption}" if (name, n) == ("2199200615.jpg", 4) else f"{name}| {n}| {caption}"
            )
    (root / "results.csv").write_text("\n".join(lines) + "\n")
    captions, images = find_layout(str(root))
    assert images.endswith(os.path.join("flickr30k_images", "flickr30k_images"))
    parsed = parse_captions(captions)
    assert parsed == {name: _captions(name) for name in IMAGES}
    out = tmp_path / "out"
    assert main(["flickr30k", str(root), "--out", str(out), "--no-progress", "--limit", "3"]) == 0
    assert [m["captions"] for m in _samples(out).values()] == [_captions(n) for n in IMAGES[:3]]


def test_captions_txt_layout(tmp_path, image_bytes):
    root = tmp_path / "k2"
    _write_images(root / "Images", image_bytes)
    rows = ["image,caption"] + [f'{name},"{c}, again"' for name in IMAGES for c in _captions(name)]
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(["flickr30k", str(root), "--out", str(out), "--no-progress"]) == 0
    first = next(iter(_samples(out).values()))
    assert first["captions"] == [f"{c}, again" for c in _captions(IMAGES[0])]


def test_bad_caption_files_fail_with_line_numbers(tmp_path):
    bad = tmp_path / "results_20130124.token"
    bad.write_text("1000092795.jpg#0\tfine\nno tab here\n")
    with pytest.raises(Flickr30kError, match=r"token:2"):
        parse_captions(str(bad))
    other = tmp_path / "odd.txt"
    other.write_text("hello world\n")
    with pytest.raises(Flickr30kError, match="unrecognised caption layout"):
        parse_captions(str(other))
    with pytest.raises(Flickr30kError, match="no caption file"):
        find_layout(str(tmp_path / "empty_dir_that_does_not_exist"))
    with pytest.raises(SystemExit, match="no caption file"):
        main(["flickr30k", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
