"""bench/quality.py's pipeline part (base -> upsampler, what users see) at a tiny sample count, so it cannot rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_bench", REPO / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pipeline_part_scores_base_and_upsampled_images_and_reuses_its_cache(quality, tiny_models, tmp_path, capsys):
    args = [
        "--model",
        str(tiny_models["pipeline"]),
        "--parts",
        "pipeline",
        "--samples",
        "3",
        "--batch-size",
        "2",
        "--chunk",
        "2",
        "--fast-sampler",
        "dpmpp_2m:2",
        "--sampler-guidance",
        "3",
        "--precision",
        "fp32",
        "--upsamplers",
        "ddim:4:500;ddim:3:0",
        "--results",
        str(tmp_path),
    ]
    assert quality.main(args) == 0
    first = capsys.readouterr().out
    report = json.loads((tmp_path / "quality.json").read_text())["pipeline"]
    labels = [row["label"] for row in report["rows"]]
    assert labels[0] == "base" and len(labels) == 3
    assert "from t=500 (32 px)" in labels[1] and "from noise (32 px)" in labels[2]
    for row in report["rows"]:
        assert row["n"] == 3 and 0.0 <= row["all_three"] <= 1.0 and row["background_error"] >= 0.0
    assert report["rows"][1]["upsampler"]["start_step"] == 500 and report["rows"][2]["upsampler"]["start_step"] == 0
    text = (tmp_path / "quality.md").read_text()
    assert "What users see" in text and "bg RGB error" in text and "vs base" in text
    assert (tmp_path / "quality.png").stat().st_size > 0  # the base-vs-pipeline panel
    assert first.count(" images ") == 4  # two chunks for each upsampler setting
    assert quality.main(args) == 0
    assert " images " not in capsys.readouterr().out  # every chunk came from the cache


def test_background_error_is_the_distance_to_the_true_background(quality):
    target = {"background": "white"}
    assert quality.background_error({"background_rgb": [245, 245, 240]}, target) == 0.0
    assert quality.background_error({"background_rgb": [245, 245, 243]}, target) == pytest.approx(3.0)
    summary = quality.summarise(
        [{"background_rgb": [130, 130, 130]}, {"background_rgb": None}],
        [{"background": "gray", "shape": "circle", "color": "red", "position": "center"}] * 2,
    )
    assert summary["background_error"] is None  # an old cached read without the colour: no figure, not a wrong one


def test_pipeline_part_needs_an_upsampler(quality, tiny_models, tmp_path, capsys):
    with pytest.raises(SystemExit):
        quality.main(
            ["--model", str(tiny_models["pipeline"] / "base"), "--parts", "pipeline", "--results", str(tmp_path)]
        )
    assert "--parts pipeline needs an upsampler" in capsys.readouterr().err


def test_aspect_part_scores_non_square_scenes_at_their_own_shape(quality, tiny_models, tmp_path, capsys):
    args = [
        "--model", str(tiny_models["pipeline"]), "--parts", "aspect", "--aspects", "2:1,1:2", "--samples", "2",
        "--batch-size", "2", "--chunk", "2", "--fast-sampler", "dpmpp_2m:2", "--sampler-guidance", "3",
        "--precision", "fp32", "--upsamplers", "ddim:3:500", "--results", str(tmp_path),
    ]  # fmt: skip
    assert quality.main(args) == 0
    rows = json.loads((tmp_path / "quality.json").read_text())["aspect"]["rows"]
    assert [(r["aspect"], r["stage"]) for r in rows] == [
        ("2:1", "base"),
        ("2:1", "final"),
        ("1:2", "base"),
        ("1:2", "final"),
    ]
    for row in rows:
        wide = row["aspect"] == "2:1"
        assert (row["width"] > row["height"]) == wide and row["width"] != row["height"]
        assert row["n"] == 2 and 0.0 <= row["position"] <= 1.0 and row["background_error"] >= 0.0
    assert rows[1]["width"] == 2 * rows[0]["width"]  # the tiny upsampler doubles each side
    assert "Non-square scenes" in (tmp_path / "quality.md").read_text()
    assert quality.main(args) == 0
    assert " images " not in capsys.readouterr().out.split("Quality benchmark")[-1]


def test_aspect_targets_keep_the_prompts_and_stay_inside_the_canvas(quality):
    world = quality.DEFAULT_WORLD
    square, prompts = quality.make_targets(world, 30, 4)
    wide, wide_prompts = quality.make_targets(world, 30, 4, aspect=2.0)
    assert prompts == wide_prompts and [t["position"] for t in square] == [t["position"] for t in wide]
    assert all(t["aspect"] == 2.0 for t in wide)


def test_placement_is_part_of_the_cached_setting(quality, tiny_models, tmp_path, capsys):
    """Placed and unplaced images never share a cache entry; unplaced settings keep their old form (and slug)."""
    common = [
        "--model", str(tiny_models["pipeline"] / "base"), "--parts", "guidance", "--guidance", "3", "--samples", "2",
        "--batch-size", "2", "--chunk", "2", "--fast-sampler", "dpmpp_2m:2", "--precision", "fp32",
        "--results", str(tmp_path),
    ]  # fmt: skip
    assert quality.main(common) == 0
    assert quality.main([*common, "--no-placement"]) == 0
    folders = sorted(p.name for p in tmp_path.glob("*/*") if p.is_dir())
    assert folders == ["dpmpp_2m-2-g3-fp32-s0", "dpmpp_2m-2-g3-fp32-s0-placed"]
    assert capsys.readouterr().out.count(" images ") == 2  # the second run did not reuse the placed images


def test_position_words_diagnostic_runs(capsys):
    spec = importlib.util.spec_from_file_location("position_words", REPO / "bench" / "position_words.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--samples", "2"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["t"] for r in rows] == list(module.LEVELS)
    assert all(r["true"] > 0 and r["ratio"] == pytest.approx(r["other"] / r["true"]) for r in rows)
