"""The emoji world's scenes: seeded rendering, captions that say what is drawn, and `emoji-scenes` shards."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from data_pipeline.__main__ import main as data_main
from data_pipeline.emoji_world import (
    CAST_NAMES,
    COMIC_CAST,
    DEFAULT_EMOJI_WORLD,
    canonical_emoji_caption,
    emoji_world_from_manifest,
    make_emoji_scene,
    make_emoji_world,
    score_emoji,
)
from data_pipeline.synthetic.captions import POSITION_PHRASES, POSITION_SHORT
from data_pipeline.synthetic.world import PALETTE


def test_cast_is_large_enough_and_names_the_seed_subjects():
    assert len(COMIC_CAST) >= 64 and len(set(CAST_NAMES)) == len(CAST_NAMES)
    assert {"sailboat", "beach", "framed picture", "cat", "robot", "ghost"} <= set(CAST_NAMES)


def test_scenes_are_deterministic_by_seed_and_index():
    a = make_emoji_scene(5, seed=1, size=64, style="comic")
    b = make_emoji_scene(5, seed=1, size=64, style="comic")
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert not np.array_equal(a[0], make_emoji_scene(5, seed=2, size=64, style="comic")[0])
    assert a[0].shape == (64, 64, 3) and a[0].dtype == np.uint8


def _mentions_position(caption: str, subject: dict, pair: bool) -> bool:
    if not pair:
        phrases = POSITION_PHRASES[subject["position"]] + POSITION_SHORT[subject["position"]]
        return any(p in caption for p in phrases)
    row, col = subject["position"].split("_")
    words = POSITION_PHRASES[subject["position"]] + POSITION_SHORT[subject["position"]] + (row, col, "next to")
    return any(w in caption for w in words)


def test_captions_name_every_emoji_its_place_and_the_background():
    pairs = 0
    for index in range(60):
        _, captions, attributes = make_emoji_scene(index, seed=4, size=32, captions_per_image=3)
        subjects = attributes["subjects"]
        pairs += len(subjects) == 2
        assert 1 <= len(subjects) <= 2 and len(set(captions)) == len(captions)
        for caption in captions:
            assert attributes["background"] in caption
            for subject in subjects:
                assert subject["emoji"] in caption
                assert _mentions_position(caption, subject, len(subjects) == 2), caption
        if len(subjects) == 2:
            assert subjects[0]["position"] != subjects[1]["position"]
            assert "center" not in {s["position"] for s in subjects}
    assert 5 <= pairs <= 35  # about pair_p of the scenes


def test_canonical_caption():
    attributes = {
        "subjects": [{"emoji": "sailboat", "position": "top_left", "size": "small"}],
        "background": "cyan",
        "style": "plain",
    }
    assert canonical_emoji_caption(attributes) == "a small sailboat in the top left on a cyan background"
    attributes["subjects"].append({"emoji": "robot", "position": "bottom_right", "size": "small"})
    assert canonical_emoji_caption(attributes, name_size=False) == (
        "a sailboat in the top left and a robot in the bottom right on a cyan background"
    )


def test_pair_captions_never_name_sizes_when_pairs_come_in_one():
    """A model trained on these captions never reads "small" in a pair caption: the evaluation prompts must not
    say it either (with it, a base at step 6,600 drew one subject for a pair caption, without it two)."""
    assert DEFAULT_EMOJI_WORLD.names_size(1) and not DEFAULT_EMOJI_WORLD.names_size(2)
    for i in range(200):
        _, captions, attributes = make_emoji_scene(i, seed=3, size=32)
        named = any(f" {w} " in f" {c} " for c in captions for w in ("small", "little", "large", "big"))
        assert named == (len(attributes["subjects"]) == 1), captions


def test_scene_background_and_glyph_are_where_the_attributes_say():
    world = make_emoji_world(emoji="sailboat", positions="top_left", sizes="large", pair_p=0.0)
    image, _, attributes = make_emoji_scene(0, seed=0, world=world, size=64)
    assert np.abs(image[-4:, -4:].astype(int) - PALETTE[attributes["background"]]).max() <= 1
    dark = image.max(axis=-1) < 60  # the sailboat's outlines
    ys, xs = np.nonzero(dark)
    assert xs.mean() < 32 and ys.mean() < 32


def test_world_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown: dinosaur"):
        make_emoji_world(emoji="cat,dinosaur")
    assert make_emoji_world(emoji="Cat, jack-o-lantern").emoji == ("cat", "jack-o-lantern")
    assert make_emoji_world(emoji=3).emoji == CAST_NAMES[:3]


def test_emoji_scenes_command_writes_ground_truth_that_scores(tmp_path):
    out = tmp_path / "scenes"
    argv = ["emoji-scenes", "--out", str(out), "--count", "24", "--sizes", "32,64", "--shard-size", "10"]
    argv += ["--seed", "3", "--style", "comic", "--emoji", "12", "--processes", "1", "--no-progress"]
    assert data_main(argv) == 0
    import webdataset as wds

    urls = sorted(glob.glob(os.path.join(out, "64", "*.tar")))
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("png", "json"))
    assert len(samples) == 24 and len(urls) == 3
    for _, meta in samples:
        assert meta["license"] == "CC BY-SA 4.0" and "OpenMoji" in meta["attribution"]
        assert meta["attributes"]["style"] == "comic" and meta["source"] == "emoji_scenes"
        assert all(s["emoji"] in CAST_NAMES[:12] for s in meta["attributes"]["subjects"])
    world = emoji_world_from_manifest(str(out))
    assert world.emoji == CAST_NAMES[:12] and world != DEFAULT_EMOJI_WORLD
    figures = score_emoji([img for img, _ in samples], [m["attributes"] for _, m in samples], world)
    assert figures["all"] >= 0.95 and figures["style"] == 1.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"][0]["license"] == "CC BY-SA 4.0"


def test_emoji_scenes_command_bad_world_is_one_line(tmp_path, capsys):
    argv = ["emoji-scenes", "--out", str(tmp_path / "x"), "--emoji", "cat,dinosaur", "--no-progress"]
    assert data_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dinosaur" in err[0]


def test_scene_rendered_large_and_shrunk_matches_one_rendered_small():
    import cv2

    for style in ("plain", "comic"):
        large = make_emoji_scene(7, seed=1, size=128, style=style)[0]
        small = make_emoji_scene(7, seed=1, size=64, style=style)[0]
        shrunk = cv2.resize(large, (64, 64), interpolation=cv2.INTER_AREA)
        assert np.abs(shrunk.astype(int) - small).mean() < 5  # pixel rounding of the glyph's place only
