"""`python -m sampling generate | comic | inpaint` end to end on tiny random models."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sampling.__main__ import main
from sampling.outputs import read_parameters, sidecar_path


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_temp_files(folder):
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------ generate
def test_generate_writes_parameters_and_reruns_skip(tiny_models, fast_args, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "generate",
        "a red boat",
        "",
        "-n",
        "2",
        "--seed",
        "40",
        "--model",
        tiny_models["pipeline"],
        "--out",
        out,
        "--grid",
        *fast_args,
    ]
    assert run_cli(*args) == 0
    pngs = sorted(p.name for p in out.glob("0*.png"))
    assert len(pngs) == 4 and (out / "grid.png").is_file()
    params = read_parameters(out / pngs[0])
    assert params["prompt"] == "a red boat" and params["seed"] == 40 and params["sampler"] == "dpmpp_2m_sde"
    assert params["steps"] == 3 and params["guidance"] == 3.0 and params["size"] == 32
    assert params["model"].startswith("pipeline/base@") and params["upsampler"]["temperature"] == 0.997
    assert [read_parameters(out / n)["seed"] for n in pngs] == [40, 41, 42, 43]
    assert read_parameters(out / pngs[2])["prompt"] == ""  # unconditional sample
    with Image.open(out / pngs[0]) as im:
        assert im.size == (32, 32) and im.text["seed"] == "40"
    assert json.loads(sidecar_path(out / pngs[0]).read_text())["parameters"] == params
    before = snapshot(out)
    capsys.readouterr()

    assert run_cli(*args) == 0  # rerun: nothing regenerated
    assert "0 to generate, 4 already written" in capsys.readouterr().out
    assert snapshot(out) == before

    lost = np.asarray(Image.open(out / pngs[3])).astype(int)
    (out / pngs[3]).unlink()  # a lost file is made again (alone in its batch now: equal up to rounding)
    assert run_cli(*args) == 0
    assert np.abs(np.asarray(Image.open(out / pngs[3])).astype(int) - lost).max() <= 1
    assert {k: v for k, v in snapshot(out).items() if "0003" not in str(k) and "grid" not in str(k)} == {
        k: v for k, v in before.items() if "0003" not in str(k) and "grid" not in str(k)
    }
    before = snapshot(out)

    assert run_cli(*args[: -len(fast_args)], *fast_args, "--guidance", "5") == 2
    assert "made with other settings" in capsys.readouterr().err
    assert snapshot(out) == before
    assert run_cli(*args, "--guidance", "5", "--overwrite") == 0
    assert read_parameters(out / pngs[0])["guidance"] == 5.0
    assert no_temp_files(out)


def test_generate_prompts_file_and_no_upsample(tiny_models, fast_args, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n\na dog\n", encoding="utf-8")
    out = tmp_path / "out"
    assert (
        run_cli(
            "generate",
            "--prompts-file",
            prompts,
            "--model",
            tiny_models["pipeline"],
            "--no-upsample",
            "--sampler",
            "ancestral",
            "--out",
            out,
            *fast_args,
        )
        == 0
    )
    files = sorted(out.glob("*.png"))
    assert [read_parameters(p)["prompt"] for p in files] == ["a cat", "a dog"]
    assert all(read_parameters(p)["upsampler"] is None and read_parameters(p)["size"] == 16 for p in files)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--guidance", "99"], "guidance scale must be between 0 and 50"),
        (["--steps", "abc"], "dpmpp_2m_sde takes a number of steps"),
        (["--sampler", "ancestral", "--steps", "abc"], "not a usable respacing"),
        (["--sampler", "ddim", "--eta", "2"], "eta must be between 0 and 1"),
        (["--upsample-temperature", "0"], "upsampler: temperature"),
        (["--upsample-start", "1000"], "upsampler: start step must be between 1 and 999"),
        (["--upsample-sampler", "dpmpp_2m", "--upsample-start", "500"], "upsampler: a start step applies to"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--device", "tpu"], "unknown device"),
        (["-n", "0"], "--num-images must be at least 1"),
    ],
)
def test_generate_bad_settings(tiny_models, fast_args, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert run_cli("generate", "x", "--model", tiny_models["pipeline"], "--out", out, *fast_args, *extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())


def test_models_that_are_not_models(tiny_models, fast_args, tmp_path, capsys, monkeypatch):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model")
    assert run_cli("generate", "x", "--model", junk, *fast_args) == 2
    assert "is not a model" in capsys.readouterr().err
    fake_pt = tmp_path / "fake.pt"
    fake_pt.write_bytes(b"not a checkpoint")
    assert run_cli("generate", "x", "--model", fake_pt, *fast_args) == 2
    assert "fake.pt" in capsys.readouterr().err
    assert run_cli("generate", "x", "--model", tmp_path / "missing", *fast_args) == 2
    assert "no such file or folder" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models["pipeline"] / "base", broken)
    (broken / "model.safetensors").write_bytes(b"junk")
    assert run_cli("generate", "x", "--model", broken, *fast_args) == 2
    assert "could not load the model folder" in capsys.readouterr().err
    upsampler = tiny_models["pipeline"] / "upsampler"
    assert run_cli("generate", "x", "--model", upsampler, *fast_args) == 2
    assert "is an upsampler" in capsys.readouterr().err

    import finetune.bundled_models

    def unavailable(kind, pipeline="bundled"):
        raise FileNotFoundError(f"no bundled {kind} model")

    monkeypatch.setattr(finetune.bundled_models, "bundled_model_path", unavailable)
    assert run_cli("generate", "x", *fast_args) == 2
    assert "bundled base model is not available" in capsys.readouterr().err


def test_openai_checkpoint_with_preset(tiny_models, tiny_options, tmp_path):
    """A .pt state_dict loads through the model core when its --preset matches."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(tiny_models["pipeline"] / "base" / "model.safetensors"))
    pt = tmp_path / "base.pt"
    torch.save(state, pt)
    from sampling.loading import ModelLoadError, load_sampling_model

    with pytest.raises(ModelLoadError, match="pass the right --preset"):
        load_sampling_model(pt, "base", torch.device("cpu"), preset="tiny-base")
    # The tiny test options are not a named preset, so register a look-alike one for this check.
    import finetune.model.options as options_module

    options_module.PRESETS["sampling-test-base"] = dict(tiny_options["base"])
    try:
        loaded = load_sampling_model(pt, "base", torch.device("cpu"), preset="sampling-test-base")
    finally:
        del options_module.PRESETS["sampling-test-base"]
    assert loaded.image_size == 16 and loaded.model_id.startswith("base@")


# ------------------------------------------------------------------------------------ comic
SCRIPT = """\
title: Harbour Days
character: a sailor in a blue coat
style: ", a painting"
seed: 3
pages:
  - layout: 2x2
    panels:
      - caption: on a pier at dawn
        narration: It began on a quiet morning.
        dialogue:
          - {speaker: Sam, text: What a fine day for sailing!}
      - caption: hoisting a sail
        dialogue:
          - {speaker: Sam, text: Wind is picking up..., kind: thought}
      - caption: a wave crashing over the deck
        dialogue:
          - {speaker: Sam, text: Hold on!, kind: shout}
        seed: 77
  - title: Home
    layout: strip
    panels:
      - caption: back on the pier at sunset
      - caption: drinking tea
"""


def comic_args(tiny_models, fast_args, script, out, *extra):
    return [
        "comic",
        script,
        "--model",
        tiny_models["pipeline"],
        "--out",
        out,
        "--panel-size",
        "192",
        "--batch-size",
        "3",
        *fast_args,
        *extra,
    ]


def test_comic_pages_panels_metadata_and_regeneration(tiny_models, fast_args, tmp_path, capsys):
    script = tmp_path / "harbour.yaml"
    script.write_text(SCRIPT, encoding="utf-8")
    out = tmp_path / "comic"
    assert run_cli(*comic_args(tiny_models, fast_args, script, out)) == 0
    assert sorted(p.name for p in out.glob("page-*.png")) == ["page-01.png", "page-02.png"]
    assert len(list((out / "panels").glob("*.png"))) == 5
    meta = json.loads((out / "comic.json").read_text())
    assert [(p["page"], p["panel"]) for p in meta["panels"]] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    assert meta["panels"][2]["seed"] == 77 and len({p["seed"] for p in meta["panels"]}) == 5
    assert meta["panels"][0]["prompt"] == "a sailor in a blue coat, on a pier at dawn, a painting"
    for panel in meta["panels"]:
        assert read_parameters(out / panel["file"])["seed"] == panel["seed"]

    # Page 1: a 2x2 grid holding three 192px panels, the last one centred, with lettering drawn.
    with Image.open(out / "page-01.png") as im:
        page = np.asarray(im.convert("RGB")).astype(int)
        assert read_parameters(out / "page-01.png")["seed"] == [p["seed"] for p in meta["panels"][:3]]
    boxes = [p["box"] for p in meta["panels"][:3]]
    assert all(x1 - x0 == 192 and y1 - y0 == 192 for x0, y0, x1, y1 in boxes)
    assert boxes[0][1] == boxes[1][1] < boxes[2][1] and boxes[0][0] < boxes[2][0] < boxes[1][0]
    for panel, (x0, y0, x1, y1) in zip(meta["panels"][:3], boxes):
        with Image.open(out / panel["file"]) as im:
            tile = np.asarray(im.convert("RGB").resize((192, 192), Image.Resampling.LANCZOS)).astype(int)
        centre = slice(80, 112)
        assert np.abs(page[y0:y1, x0:x1][centre, centre] - tile[centre, centre]).mean() < 1
        assert (page[y0 + 1, x0:x1] == 0).all()  # top border
        for item in panel["lettering"]:
            bx0, by0, bx1, by1 = item["box"]
            region = page[by0 + 5 : by1 - 5, bx0 + 8 : bx1 - 8]
            assert (region.sum(axis=-1) < 200).mean() > 0.03  # dark letters
            assert (region.min(axis=-1) > 180).mean() > 0.3  # on a light balloon
    assert [len(p["lettering"]) for p in meta["panels"]] == [2, 1, 1, 0, 0]

    # A rerun reuses every panel; regenerating one panel changes it alone.
    before = snapshot(out / "panels")
    capsys.readouterr()
    assert run_cli(*comic_args(tiny_models, fast_args, script, out)) == 0
    assert "0 panel(s) generated, 5 reused" in capsys.readouterr().out
    assert snapshot(out / "panels") == before
    assert run_cli(*comic_args(tiny_models, fast_args, script, out, "--regenerate", "1.2=999")) == 0
    after = snapshot(out / "panels")
    changed = {str(k) for k in after if after[k] != before[k]}
    assert changed == {"page-01-panel-02.png", "page-01-panel-02.json"}
    meta = json.loads((out / "comic.json").read_text())
    assert meta["panels"][1]["seed"] == 999 and meta["seed_overrides"] == {"1.2": 999}
    assert run_cli(*comic_args(tiny_models, fast_args, script, out)) == 0  # the new seed sticks
    assert snapshot(out / "panels") == after

    # The same script in another folder gives the same panels: seeds are reproducible.
    other = tmp_path / "again"
    assert run_cli(*comic_args(tiny_models, fast_args, script, other)) == 0
    again = snapshot(other / "panels")
    assert again["page-01-panel-01.png"] == before["page-01-panel-01.png"]
    assert again["page-01-panel-02.png"] == before["page-01-panel-02.png"]

    # Editing a caption conflicts with the panel on disk until --overwrite, which redoes that panel only.
    script.write_text(SCRIPT.replace("drinking tea", "drinking coffee"), encoding="utf-8")
    capsys.readouterr()
    assert run_cli(*comic_args(tiny_models, fast_args, script, out)) == 2
    assert "panel(s) 2.2" in capsys.readouterr().err
    assert run_cli(*comic_args(tiny_models, fast_args, script, out, "--overwrite")) == 0
    final = snapshot(out / "panels")
    assert {str(k) for k in final if final[k] != after[k]} == {"page-02-panel-02.png", "page-02-panel-02.json"}
    assert no_temp_files(out)


def test_comic_bad_inputs(tiny_models, fast_args, tmp_path, capsys):
    script = tmp_path / "bad.yaml"
    script.write_text("panels:\n  - caption: a\n    dialogue:\n      - {speaker: A, text: hi, kind: yell}\n")
    assert run_cli(*comic_args(tiny_models, fast_args, script, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "line 4" in err and "dialogue[0].kind" in err
    good = tmp_path / "good.yaml"
    good.write_text("panels: [a, b]\n")
    assert run_cli(*comic_args(tiny_models, fast_args, good, tmp_path / "o", "--regenerate", "3.1")) == 2
    assert "the script has no such panel" in capsys.readouterr().err
    assert run_cli(*comic_args(tiny_models, fast_args, good, tmp_path / "o", "--regenerate", "one")) == 2
    assert "bad panel reference" in capsys.readouterr().err
    assert run_cli(*comic_args(tiny_models, fast_args, tmp_path / "nope.yaml", tmp_path / "o")) == 2
    assert "not a bundled example" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert run_cli("comic", "lighthouse", "--check") == 0
    assert "2 page(s), 6 panel(s)" in capsys.readouterr().out


def test_comic_clip_rerank(tiny_models, fast_args, tmp_path, capsys, monkeypatch):
    import open_clip
    import torch
    from safetensors.torch import save_file

    monkeypatch.delenv("AUTOCOMICS_CLIP_WEIGHTS", raising=False)
    config = tmp_path / "tinyclip.json"
    config.write_text(
        json.dumps(
            {
                "embed_dim": 16,
                "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
            }
        )
    )
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    weights = tmp_path / "tinyclip.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model("tinyclip").state_dict().items()}, str(weights))
    script = tmp_path / "s.yaml"
    script.write_text("panels: [a red boat, a green tree]\n")
    out = tmp_path / "out"
    assert run_cli(*comic_args(tiny_models, fast_args, script, out, "--candidates", "3", "--clip-model", config)) == 2
    assert "needs local weights" in capsys.readouterr().err
    assert (
        run_cli(
            *comic_args(
                tiny_models,
                fast_args,
                script,
                out,
                "--candidates",
                "3",
                "--clip-model",
                config,
                "--clip-weights",
                weights,
            )
        )
        == 0
    )
    from sampling.rerank import ClipReranker

    reranker = ClipReranker(str(config), weights)
    for panel in json.loads((out / "comic.json").read_text())["panels"]:
        info = json.loads((out / panel["file"]).with_suffix(".json").read_text())["info"]
        assert info["candidate_seeds"] == [panel["seed"] + k for k in range(3)] and len(info["clip_scores"]) == 3
        assert info["image_seed"] == info["candidate_seeds"][int(np.argmax(info["clip_scores"]))]
        with Image.open(out / panel["file"]) as im:  # the kept image is the best scoring one
            score = reranker.scores([im.convert("RGB")], panel["prompt"])[0]
        assert abs(score - max(info["clip_scores"])) < 0.05


# ------------------------------------------------------------------------------------ inpaint
def test_inpaint_cli(tiny_models, fast_args, tmp_path, capsys):
    rng = np.random.default_rng(1)
    image = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(image)
    mask = tmp_path / "mask.png"
    fill = np.zeros((40, 48), dtype=np.uint8)
    fill[10:30, 14:34] = 255
    Image.fromarray(fill).save(mask)
    out = tmp_path / "out"
    args = [
        "inpaint",
        "a window",
        "--image",
        image,
        "--mask",
        mask,
        "--model",
        tiny_models["inpaint"],
        "--out",
        out,
        "-n",
        "2",
        *fast_args,
    ]
    assert run_cli(*args) == 0
    results = sorted(out.glob("inpaint-*.png"))
    assert len(results) == 2
    params = read_parameters(results[0])
    assert params["mode"] == "inpaint" and params["upsampler_inpaints"] and params["prompt"] == "a window"
    with Image.open(results[0]) as im:  # a 48x40 picture keeps its 6:5 aspect (the nearest shape the models make)
        size = im.size
        result = np.asarray(im).astype(int)
    assert params["size"] == [size[1], size[0]] and abs(size[0] / size[1] - 48 / 40) < 0.1
    source = Image.open(image).convert("RGB").resize(size, Image.Resampling.BOX)
    keep = np.asarray(Image.fromarray(fill).resize(size, Image.Resampling.BOX)) == 0
    assert np.abs(result[keep] - np.asarray(source).astype(int)[keep]).max() <= 1
    capsys.readouterr()
    assert run_cli(*args) == 0 and "0 to generate" in capsys.readouterr().out

    small = tmp_path / "small.png"
    Image.fromarray(fill[:20, :20]).save(small)
    assert run_cli(*args[:4], "--mask", small, *args[6:]) == 2
    assert "the mask is 20x20 but the image is 48x40" in capsys.readouterr().err
    black = tmp_path / "black.png"
    Image.new("L", (48, 40)).save(black)
    assert run_cli(*args[:4], "--mask", black, *args[6:]) == 2
    assert "marks nothing to fill" in capsys.readouterr().err
    assert run_cli("inpaint", "--image", image, "--mask", mask, "--model", tiny_models["pipeline"], *fast_args) == 2
    assert "needs an inpainting base model" in capsys.readouterr().err
    assert run_cli("inpaint", "--image", tmp_path / "none.png", "--mask", mask, *fast_args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_inpaint_cli_keeps_a_wide_pictures_shape(tiny_models, fast_args, tmp_path, capsys):
    image, mask = tmp_path / "wide.png", tmp_path / "wide_mask.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (30, 60, 3), dtype=np.uint8)).save(image)
    fill = np.zeros((30, 60), dtype=np.uint8)
    fill[8:22, 20:40] = 255
    Image.fromarray(fill).save(mask)
    out = tmp_path / "out"
    args = ["inpaint", "a door", "--image", image, "--mask", mask, "--model", tiny_models["inpaint"], "--out", out]
    assert run_cli(*args, *fast_args) == 0
    (result,) = out.glob("inpaint-*.png")
    with Image.open(result) as im:
        assert im.width == 2 * im.height  # 2:1 in, 2:1 out (no centre square)
    assert read_parameters(result)["size"] == [im.height, im.width]
    panorama = tmp_path / "panorama.png"
    Image.new("RGB", (100, 10)).save(panorama)
    Image.new("L", (100, 10), 255).save(tmp_path / "panorama_mask.png")
    assert run_cli(*args[:2], "--image", panorama, "--mask", tmp_path / "panorama_mask.png", *args[6:], *fast_args) == 2
    err = capsys.readouterr().err
    assert "aspect ratio" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "extra, start",
    [
        ([], 500),
        (["--upsample-start", "0"], 0),
        (["--upsample-start", "300"], 300),
        (["--upsample-sampler", "dpmpp_2m", "--upsample-steps", "3"], 0),
    ],
)
def test_upsampler_start_default_and_override(tiny_models, fast_args, tmp_path, extra, start):
    out = tmp_path / "out"
    assert run_cli("generate", "a cat", "--model", tiny_models["pipeline"], "--out", out, *fast_args, *extra) == 0
    (png,) = sorted(out.glob("*.png"))
    assert read_parameters(png)["upsampler"]["start_step"] == start
