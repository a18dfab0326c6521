"""`python -m finetune adapter teach`: a handful of images and a tiny random base -> an adapter folder that loads on
that base; bad requests are one line and write nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from data_pipeline.commands import Command, run_command_line
from finetune.adapters import apply_adapters
from finetune.adapters.lora import lora_layers
from finetune.adapters.prior import world_captions
from finetune.adapters.teach import character_repeats, prior_uncond_p, stage_character
from finetune.model import get_preset
from finetune.model_folder import load_model_folder
from finetune.model_id import folder_model_id
from tests.adapters.helpers import model_inputs, output
from tests.random_models import save_random_model_folder

ADAPTER_COMMAND = [Command("adapter", "finetune.adapters.command", "LoRA adapters")]
TINY = {**get_preset("tiny-base"), "xf_layers": 1, "num_res_blocks": 1, "image_size": 16, "channel_mult": "1,2"}


def teach(argv, capsys):
    status = run_command_line("python -m finetune", "", ADAPTER_COMMAND, ["adapter", "teach", *map(str, argv)])
    return status, capsys.readouterr()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("teach")
    base = save_random_model_folder(root / "base", {**TINY, "attention_resolutions": "8"}, seed=0)
    images = root / "zorp-images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = np.full((24, 24, 3), (40, 200, 220), np.uint8)
        pixels[6:18, 6:18] = (130, 50, 180) if i % 2 else rng.integers(0, 255, 3)
        Image.fromarray(pixels).save(images / f"zorp-{i}.png")
    prompts = root / "prompts.txt"
    prompts.write_text("a red circle on a white background\na blue square on a gray background\n")
    return {"root": root, "base": base, "images": images, "prompts": prompts}


def test_teach_leaves_an_adapter_folder_that_loads_on_its_base(setup, capsys):
    out = setup["root"] / "zorp-adapter"
    work = setup["root"] / "work"
    argv = ["--name", "zorp", "--images", setup["images"], "--out", out, "--base", setup["base"], "--steps", 2]
    argv += ["--rank", 2, "--prior-images", 3, "--prior-prompts", setup["prompts"], "--batch-size", 2]
    status, captured = teach([*argv, "--work-dir", work, "--threads", 1], capsys)
    assert status == 0, captured.err
    assert "taught 'zorp' from 4 image(s) and 3 prior image(s)" in captured.out
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["rank"] == 2
    staged = [json.loads(line) for line in (work / "images" / "metadata.jsonl").read_text().splitlines()]
    assert [row["text"] for row in staged[:4]] == ["zorp"] * 4  # no caption file: the name
    assert [row["text"] for row in staged[4:]] == [
        "a red circle on a white background",
        "a blue square on a gray background",
        "a red circle on a white background",
    ]
    assert (work / "data" / "manifest.json").is_file()  # shards built by data_pipeline's folder source
    model = load_model_folder(setup["base"]).model
    inputs = model_inputs(model)
    before = output(model, inputs)
    apply_adapters(model, [(out, 1.0)], base_model_id=folder_model_id(setup["base"]))
    assert list(lora_layers(model))
    assert not torch.allclose(output(model, inputs), before)  # two steps moved the adapter off zero


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--name", "9zorp"], "must be 1-64 characters starting with a letter"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--images", "nowhere"], "--images nowhere: not a folder"),
        (["--prior-prompts", "missing.txt"], "--prior-prompts missing.txt: no such file"),
        ([], "records no synthetic world"),
        (["--character-share", "0"], "--character-share must be in (0, 1]"),
        (["--prior-guidance", "-1"], "--prior-guidance must be between 0 and 100"),
        (["--uncond-p", "1"], "--uncond-p must be in [0, 1)"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(setup, capsys, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    argv = ["--name", "zorp", "--images", setup["images"], "--out", tmp_path / "out", "--base", setup["base"]]
    status, captured = teach([*argv, *extra], capsys)
    assert status == 2 and message in captured.err and captured.err.count("\n") == 1
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_an_empty_image_folder_is_refused(setup, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    argv = ["--name", "zorp", "--images", tmp_path / "empty", "--out", tmp_path / "out", "--base", setup["base"]]
    status, captured = teach([*argv, "--prior-images", "0"], capsys)
    assert status == 2 and "no images" in captured.err


def test_the_bundled_base_gives_captions_of_its_world():
    from finetune.bundled_models import bundled_model_path

    captions = world_captions(bundled_model_path("base"), 50, seed=0)
    assert len(captions) == 50 and all("star" not in c for c in captions)  # the bundled world has no star
    assert any("circle" in c for c in captions)


@pytest.mark.parametrize(
    "characters, priors, share, repeats",
    [(20, 120, 0.5, 6), (20, 0, 0.5, 1), (20, 120, 1.0, 1), (4, 3, 0.5, 1), (20, 60, 0.25, 1), (5, 100, 0.8, 80)],
)
def test_character_images_are_repeated_to_their_share_of_the_samples(characters, priors, share, repeats):
    assert character_repeats(characters, priors, share) == repeats


def test_staged_repeats_are_separate_files_with_the_same_caption(setup, tmp_path):
    items = [{"file": p, "caption": "zorp"} for p in sorted(setup["images"].iterdir())[:2]]
    rows = stage_character(items, tmp_path, repeats=3)
    assert len(rows) == 6 and len({r["file_name"] for r in rows}) == 6 and {r["text"] for r in rows} == {"zorp"}
    first = [(tmp_path / r["file_name"]).read_bytes() for r in rows[:3]]
    assert first[0] == first[1] == first[2]


def teach_small(setup, capsys, name: str, *extra):
    """A one-step teach on the setup's images with 3 prior prompts, its work files kept; (work dir, staged rows)."""
    out, work = setup["root"] / f"zorp-{name}", setup["root"] / f"work-{name}"
    argv = ["--name", "zorp", "--images", setup["images"], "--out", out, "--base", setup["base"], "--steps", 1]
    argv += ["--rank", 2, "--prior-images", 3, "--prior-prompts", setup["prompts"], "--batch-size", 2]
    status, captured = teach([*argv, "--work-dir", work, "--threads", 1, *extra], capsys)
    assert status == 0, captured.err
    return work, [json.loads(line) for line in (work / "images" / "metadata.jsonl").read_text().splitlines()]


def test_uncond_images_prior_keeps_the_characters_captions_and_the_unconditional_share(setup, capsys):
    work, staged = teach_small(setup, capsys, "kept", "--uncond-images", "prior")
    kept = [row for row in staged if row.get("caption_dropout") == "off"]
    assert kept and all(row["file_name"].startswith("character-") for row in kept)
    assert not any(row.get("caption_dropout") for row in staged if row["file_name"].startswith("prior-"))
    trainer = (work / "run" / "config.yaml").read_text()
    assert "uncond_p: 0.4" in trainer  # 0.2 of all samples from the priors, half of the samples here
    assert prior_uncond_p(0.2, 0.2) == pytest.approx(0.25) and prior_uncond_p(0.5, 0.9) == 0.95


@pytest.mark.parametrize("extra, target", [((), "base"), (("--prior-target", "noise"), "noise")])
def test_prior_images_are_marked_and_prior_target_reaches_the_trainer(setup, capsys, extra, target):
    work, staged = teach_small(setup, capsys, f"target-{target}", *extra)
    marked = {row["file_name"] for row in staged if row.get("prior_preservation") == "on"}
    assert marked == {row["file_name"] for row in staged if row["file_name"].startswith("prior-")} and len(marked) == 3
    assert f"prior_target: {target}" in (work / "run" / "config.yaml").read_text()  # the default: base


def test_prior_images_are_kept_and_reused_only_for_the_same_recipe(setup, monkeypatch):
    from finetune.adapters import prior

    drawn = []
    real_draw = prior.draw_images

    def counting_draw(loaded, prompts, seeds, **kwargs):
        drawn.extend(zip(prompts, seeds))
        return real_draw(loaded, prompts, seeds, **kwargs)

    monkeypatch.setattr(prior, "draw_images", counting_draw)
    model = load_model_folder(setup["base"])
    folder = prior.PriorFolder(setup["root"] / "prior-dir", folder_model_id(setup["base"]), 3.0, size=16)
    prompts = ["a red circle", "a blue square", "a red circle"]
    first = prior.prior_images(lambda: model, prompts, 5, 3.0, folder)
    assert len(drawn) == 3 and len(list(folder.path.glob("prior-*.png"))) == 3
    again = prior.prior_images(lambda: pytest.fail("nothing to draw"), prompts, 5, 3.0, folder)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    prior.prior_images(lambda: model, prompts + ["a green triangle"], 5, 3.0, folder)
    assert drawn[3:] == [("a green triangle", 8)]  # only the new one
    other = prior.PriorFolder(folder.path, folder_model_id(setup["base"]), 5.0, size=16)  # other guidance
    prior.prior_images(lambda: model, prompts[:1], 5, 5.0, other)
    assert drawn[4:] == [("a red circle", 5)]
    (folder.file_for("a blue square", 6)).write_bytes(b"not a png")  # a damaged file is drawn again
    prior.prior_images(lambda: model, prompts[:2], 5, 3.0, folder)
    assert drawn[5:] == [("a blue square", 6)]
