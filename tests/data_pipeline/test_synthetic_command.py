"""`python -m data_pipeline synthetic` end to end: shards, ground truth, determinism, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_pipeline.__main__ import main
from data_pipeline.shards import iter_tar_samples
from data_pipeline.synthetic import make_world, score, world_from_manifest


def _build(out, *extra):
    args = [
        "synthetic",
        "--out",
        str(out),
        "--count",
        "50",
        "--sizes",
        "32,64",
        "--shard-size",
        "20",
        "--seed",
        "9",
        "--processes",
        "1",
        "--no-progress",
        *extra,
    ]
    return main(args)


def _samples(out, size):
    samples = {}
    for name in sorted(os.listdir(out / str(size))):
        if name.endswith(".tar"):
            for key, files in iter_tar_samples(str(out / str(size) / name)):
                samples[key] = files
    return samples


def test_builds_shards_whose_ground_truth_the_evaluator_reads_back(tmp_path):
    out = tmp_path / "comic"
    assert _build(out, "--style", "comic", "--val-fraction", "0.2", "--shapes", "3", "--colors", "red,blue,yellow") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["samples"] == 50 and manifest["totals"]["shards"] == 3
    assert manifest["image_format"] == "png"
    assert manifest["splits"]["val"] > 0 and manifest["splits"]["train"] > manifest["splits"]["val"]
    (source,) = manifest["sources"]
    assert source["type"] == "synthetic" and source["style"] == "comic" and source["render_size"] == 64
    world = world_from_manifest(str(out))
    assert world == make_world(shapes=3, colors="red,blue,yellow")

    small, large = _samples(out, 32), _samples(out, 64)
    assert list(small) == list(large) and len(small) == 50
    images, targets = [], []
    for files in small.values():
        meta = json.loads(files["json"])
        assert meta["source"] == "synthetic" and meta["width"] == meta["height"] == 64
        assert files["txt"].decode() == meta["caption"] == meta["captions"][0] and len(meta["captions"]) == 3
        attrs = meta["attributes"]
        assert attrs["style"] == "comic" and attrs["shape"] in world.shapes and attrs["color"] in world.colors
        assert attrs["color"] in meta["caption"] and attrs["shape"] in meta["caption"]
        image = cv2.imdecode(np.frombuffer(files["png"], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        assert image.shape == (32, 32, 3)
        images.append(image)
        targets.append(attrs)
    result = score(images, targets, world)
    assert result["all_three"] >= 0.98 and result["position"] >= 0.98 and result["style_rate"] == 1.0


def test_same_seed_same_bytes_and_a_rerun_resumes(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _build(a) == 0 and _build(b) == 0
    for size in (32, 64):
        for name in ("00000.tar", "00001.tar", "00002.tar"):
            assert (a / str(size) / name).read_bytes() == (b / str(size) / name).read_bytes()
    # A lost shard is rebuilt alone, identical to the first time.
    before = (a / "64" / "00001.tar").read_bytes()
    os.remove(a / "64" / "00001.tar")
    capsys.readouterr()
    assert _build(a) == 0
    assert "(2 already complete)" in capsys.readouterr().out
    assert (a / "64" / "00001.tar").read_bytes() == before
    # Another seed gives other scenes.
    c = tmp_path / "c"
    assert (
        main(
            [
                "synthetic",
                "--out",
                str(c),
                "--count",
                "20",
                "--sizes",
                "32",
                "--seed",
                "10",
                "--processes",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    firsts = [json.loads(f["json"])["attributes"] for f in list(_samples(a, 32).values())[:20]]
    others = [json.loads(f["json"])["attributes"] for f in _samples(c, 32).values()]
    assert sum(x != y for x, y in zip(firsts, others)) >= 15


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--shapes", "circle,hexagon"], "unknown shapes: hexagon"),
        (["--count", "0"], "--count must be >= 1"),
        (["--style-word-p", "2"], "--style-word-p"),
        (["--sizes", "8"], ">= 16 px"),
    ],
)
def test_bad_options_fail_with_a_message_and_write_nothing(tmp_path, extra, message):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit, match=message):
        _build(out, *extra)
    assert not out.exists()


def test_help_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "data_pipeline", "synthetic", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert "--style {plain,comic}" in done.stdout and "circle, square, triangle, star" in done.stdout
