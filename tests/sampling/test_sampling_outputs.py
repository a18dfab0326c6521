"""Output files: parameters in PNG text chunks and sidecars, rerun states, atomic writes, grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sampling.outputs import make_grid, output_state, read_parameters, save_image, sidecar_path, slugify


def image(value=0, size=8):
    return np.full((size, size, 3), value, dtype=np.uint8)


def test_parameters_round_trip(tmp_path):
    params = {
        "prompt": "un café, façade — 東京",
        "seed": 7,
        "guidance": 3.0,
        "sampler": "ddim",
        "steps": "fast27",
        "model": "m@abc",
        "upsampler": None,
    }
    path = save_image(tmp_path / "a.png", image(10), params, {"seconds": 1.5})
    assert read_parameters(path) == params
    with Image.open(path) as im:
        assert im.text["prompt"] == params["prompt"] and im.text["seed"] == "7" and im.text["steps"] == "fast27"
        assert im.text["model"] == "m@abc" and im.text["sampler"] == "ddim" and im.text["guidance"] == "3.0"
        assert np.asarray(im).max() == 10
    sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert sidecar == {"image": "a.png", "parameters": params, "info": {"seconds": 1.5}}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_output_state(tmp_path):
    path = tmp_path / "x.png"
    params = {"prompt": "p", "seed": 1}
    assert output_state(path, params) == "missing"
    save_image(path, image(), params)
    assert output_state(path, params) == "same"
    assert output_state(path, {"prompt": "p", "seed": 2}) == "different"
    sidecar_path(path).unlink()  # an image without its sidecar was not finished
    assert output_state(path, params) == "missing"
    save_image(path, image(), params)
    path.write_bytes(path.read_bytes()[:20])  # truncated PNG
    assert output_state(path, params) == "missing"


def test_read_parameters_of_foreign_png(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="no generation parameters"):
        read_parameters(tmp_path / "plain.png")


def test_grid_and_slug():
    grid = make_grid([image(v) for v in (0, 50, 100, 150, 200)], columns=3, padding=1)
    assert grid.size == (3 * 8 + 4, 2 * 8 + 3)
    assert np.asarray(grid)[1 + 8 + 1 + 4, 1 + 4, 0] == 150  # second row, first tile
    with pytest.raises(ValueError):
        make_grid([image(size=8), image(size=9)])
    assert slugify("A Red Boat, at Sea!") == "a-red-boat-at-sea" and slugify("") == "untitled"
