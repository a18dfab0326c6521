"""bench/emoji_quality.py end to end on a tiny random emoji pipeline (so it cannot rot), and its scoring on
rendered scenes (where the evaluator must find what was drawn)."""

from __future__ import annotations

import json

import numpy as np
from random_models import save_random_model_folder
from test_bundled_emoji import TINY_BASE, TINY_UP

from data_pipeline.emoji_world import make_emoji_world, render_emoji_scene
from tests.bench_scripts import load_bench

WORLD = make_emoji_world(emoji="cat,robot,sailboat,ghost", backgrounds="white,cyan", pair_p=0.3)


def test_rendered_scenes_score_as_drawn(monkeypatch):
    bench = load_bench(monkeypatch, "emoji_quality")
    targets, prompts = bench.make_targets(WORLD, 24, prompt_seed=7)
    assert any(len(t["subjects"]) == 2 for t in targets) and all(" background" in p for p in prompts)
    for target, prompt in zip(targets, prompts):  # sizes named as in the training captions: never for a pair
        assert any(f" {w} " in prompt for w in ("small", "large")) == (len(target["subjects"]) == 1), prompt
    reads = [bench.brief(bench.read_emoji_scene(render_emoji_scene(t, 64), WORLD)) for t in targets]
    scores = bench.summarise(reads, targets)
    assert scores["n"] == 24 and min(scores[m] for m in bench.MEASURES) >= 0.9
    wrong = [{**r, "background": "cyan" if r["background"] == "white" else "white"} for r in reads]
    assert bench.summarise(wrong, targets)["background"] == 0.0 and bench.summarise(wrong, targets)["all"] == 0.0


def test_tiny_pipeline_is_measured_reported_and_cached(monkeypatch, tmp_path, capsys):
    bench = load_bench(monkeypatch, "emoji_quality")
    pipeline = tmp_path / "pipeline"
    save_random_model_folder(pipeline / "base", TINY_BASE, seed=1)
    save_random_model_folder(pipeline / "upsampler", TINY_UP, seed=2)
    (pipeline / "base" / "provenance.json").write_text(json.dumps({"world": WORLD.to_dict()}))
    report = tmp_path / "report"
    argv = ["--model", str(pipeline), "--samples", "3", "--guidance", "0,3", "--chunk", "2", "--batch-size", "2"]
    argv += ["--sampler", "dpmpp_2m:2", "--threads", "1", "--results", str(tmp_path / "cache")]
    argv += ["--report-dir", str(report)]
    assert bench.main(argv) == 0
    data = json.loads((report / "emoji.json").read_text())
    rows = [(r["guidance"], r["n"]) for r in data["rows"]]
    assert rows == [(0.0, 3), (0.0, 3), (3.0, 3), (3.0, 3), (None, 3)]  # the last: the upsampler alone
    assert all(0.0 <= r[m] <= 1.0 for r in data["rows"] for m in bench.MEASURES)
    md = (report / "emoji.md").read_text()
    assert "| 3 | base -> upsampler (64 px) | 3 |" in md and "| - | rendered 16 px -> upsampler (64 px) | 3 |" in md
    split = {row["prompts"]: row["n"] for row in data["best_by_prompt"]}  # the best scale's prompts, by emoji count
    targets, _ = bench.make_targets(WORLD, 3, 12345)
    assert sum(split.values()) == 3 and split.get("one emoji", 0) == sum(len(t["subjects"]) == 1 for t in targets)
    assert "| one emoji |" in md or "| two emoji |" in md
    sheet = bench.Image.open(report / "emoji-sheet.png")
    assert sheet.size == (8 * 64, 64 + bench.CAPTION_PX) and np.asarray(sheet).std() > 0
    capsys.readouterr()
    assert bench.main(argv) == 0  # every read cached: nothing drawn but the sheet
    assert "images 0-1" not in capsys.readouterr().out  # neither the pipeline's nor the rendered low-res reads
    assert bench.main(argv + ["--prompt-seed", "8"]) == 0  # other prompts: the cached reads are not theirs
    assert capsys.readouterr().out.count("images 0-1") == 3  # two scales and the upsampler alone


def test_the_upsampler_alone_starts_from_the_rendered_scene(monkeypatch, tmp_path):
    bench = load_bench(monkeypatch, "emoji_quality")
    save_random_model_folder(tmp_path / "base", TINY_BASE, seed=1)
    save_random_model_folder(tmp_path / "upsampler", TINY_UP, seed=2)
    pair = bench.load_models(str(tmp_path / "base"), bench.torch.device("cpu"), upsampler=str(tmp_path / "upsampler"))
    pipeline = bench.pipeline_at(pair, "dpmpp_2m", 2, 3.0)
    targets, prompts = bench.make_targets(WORLD, 2, prompt_seed=7)
    seen = []
    monkeypatch.setattr(bench, "run_stage", lambda sm, *a, low_res, **k: seen.append((sm, low_res)) or (low_res, None))
    images = list(bench.upsample_rendered(pipeline, targets, prompts, [0, 1], batch_size=2))
    assert seen[0][0] is pair.upsampler and len(images) == 2
    for image, target in zip(images, targets):  # the stand-in returns its input: the scene at the base's size
        np.testing.assert_array_equal(image, render_emoji_scene(target, pair.base.image_size))


def test_an_untrained_pipeline_is_one_line(monkeypatch, tmp_path, capsys):
    bench = load_bench(monkeypatch, "emoji_quality")
    assert bench.main(["--model", str(tmp_path / "missing"), "--report-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
