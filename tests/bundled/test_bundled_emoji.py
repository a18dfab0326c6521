"""The second bundled pipeline, `bundled-emoji`: its recipe (scripts/bundled/emoji/), the training script's path
choices for it (subprocess stood in), and the name `bundled-emoji` wherever `bundled` is accepted."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import pytest
import torch
from random_models import save_random_model_folder
from test_bundled_models import REPO, _fake_run, load_script

import finetune.bundled_models
from data_pipeline.__main__ import main as data_main
from data_pipeline.emoji_world import EmojiWorld, canonical_emoji_caption, read_emoji_scene
from finetune.model import build_model, get_preset
from finetune.train.config import build_config, load_config_file
from sampling.comic.script import load_script as load_comic_script
from sampling.commands.comic import example_scripts
from sampling.loading import ModelLoadError, load_models

RECIPE = REPO / "scripts" / "bundled" / "emoji"
TINY = {"xf_layers": 1, "num_res_blocks": 1}
TINY_BASE = {**get_preset("tiny-base"), **TINY, "image_size": 16, "channel_mult": "1,2", "attention_resolutions": "8"}
TINY_UP = {**get_preset("tiny-upsample"), **TINY, "image_size": 64, "channel_mult": "1,1,2,2"}
TINY_UP["attention_resolutions"] = "8"


def recorded_subprocess(script, monkeypatch) -> list:
    calls = []

    def run(cmd, **kw):
        calls.append((cmd, kw.get("env")))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(script.subprocess, "run", run)
    return calls


def test_emoji_recipe_is_a_comic_cast_with_coordinates_and_v_weighting():
    script = load_script()
    world = EmojiWorld.from_dict(script.world_provenance("emoji")["world"])
    assert len(world.emoji) >= 64 and {"sailboat", "beach", "framed picture"} <= set(world.emoji)
    options = json.loads((RECIPE / "base_model.json").read_text())
    assert options["coord_channels"] is True
    assert build_model({k: v for k, v in options.items() if not k.startswith("_")}).options["coord_channels"]
    up = json.loads((RECIPE / "upsampler_model.json").read_text())
    assert up["super_res"] and up["image_size"] == 4 * options["image_size"]
    sizes = json.loads((RECIPE / "world.json").read_text())["image_sizes"]
    assert sizes == f"{options['image_size']},{up['image_size']}"
    for kind in ("base", "upsampler"):
        values = {**load_config_file(RECIPE / f"{kind}_train.yaml"), "run_dir": "r", "data": "d", "init": "i"}
        config = build_config(values)
        assert config.mse_weighting == "v" and config.flip_p == 0.0


def test_paths_per_pipeline(tmp_path):
    script = load_script()
    assert script.run_dir(tmp_path, "base") == tmp_path / "bundled-base"  # shapes: unchanged
    assert script.run_dir(tmp_path, "base", "emoji") == tmp_path / "bundled-emoji-base"
    assert script.dataset_dir(tmp_path) == tmp_path / "data" / "shapes-plain"
    assert script.dataset_dir(tmp_path, "emoji") == tmp_path / "data" / "emoji-plain"
    weights = REPO / "finetune" / "bundled_weights"
    assert script.bundled_dir("upsampler") == weights / "upsampler"
    assert script.bundled_dir("upsampler", "emoji") == weights / "emoji" / "upsampler"
    assert script.init_dir(tmp_path, "base", "emoji") == tmp_path / "init" / "emoji-base"


def test_dataset_command_per_pipeline(tmp_path):
    script = load_script()
    shapes = script.dataset_command(tmp_path, 2, "shapes")
    assert shapes[2:4] == ["data_pipeline", "synthetic"] and "--shapes" in shapes and "--emoji" not in shapes
    emoji = script.dataset_command(tmp_path, 1, "emoji", count=500)
    assert emoji[2:4] == ["data_pipeline", "emoji-scenes"] and "--shapes" not in emoji
    assert emoji[emoji.index("--out") + 1] == str(tmp_path / "data" / "emoji-plain")
    assert emoji[emoji.index("--count") + 1] == "500"  # the trial size overrides world.json's
    assert "framed picture" in emoji[emoji.index("--emoji") + 1].split(",")


def test_emoji_train_builds_its_dataset_and_never_starts_from_the_shapes_bundle(tmp_path, monkeypatch):
    script = load_script()
    calls = recorded_subprocess(script, monkeypatch)
    monkeypatch.setattr(script, "REPO", tmp_path)
    monkeypatch.setattr(script, "bundled_dir", lambda kind, pipeline="shapes": tmp_path / "bundle" / pipeline / kind)
    inits = []
    monkeypatch.setattr(
        script, "make_scratch_init", lambda root, kind, seed=0, pipeline="shapes": inits.append(pipeline) or root / "i"
    )
    shapes_bundle = tmp_path / "bundle" / "shapes" / "base"  # the shapes pair is installed, the emoji pair is not
    shapes_bundle.mkdir(parents=True)
    (shapes_bundle / "config.json").write_text("{}")
    (shapes_bundle / "provenance.json").write_text(json.dumps({"total_steps": 6000}))

    assert script.main(["--pipeline", "emoji", "--root", str(tmp_path), "train", "base", "--count", "50"]) == 0
    (data_cmd, _), (train_cmd, env) = calls
    assert "emoji-scenes" in data_cmd and data_cmd[data_cmd.index("--count") + 1] == "50"
    assert train_cmd[train_cmd.index("--config") + 1] == str(RECIPE / "base_train.yaml")
    assert train_cmd[train_cmd.index("--run-dir") + 1] == str(tmp_path / "bundled-emoji-base")
    assert train_cmd[train_cmd.index("--data") + 1] == str(tmp_path / "data" / "emoji-plain")
    assert train_cmd[-2:] == ["--init", str(tmp_path / "i")] and inits == ["emoji"]
    assert env["OMP_NUM_THREADS"] == "1"
    assert json.loads((tmp_path / "bundled-emoji-base" / "lineage.json").read_text())["init"] == "scratch"
    assert not (tmp_path / "bundled-base").exists()


def test_emoji_export_to_a_folder_carries_the_licence(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "bundled_dir", lambda kind, pipeline="shapes": pytest.fail("wrote the bundle"))
    ema = _fake_run(tmp_path, "emoji-base", 7, get_preset("tiny-base"))
    with pytest.raises(SystemExit, match="no dataset"):  # the vocabulary is trimmed to the dataset's captions
        script.export(tmp_path, "base", "emoji", to=tmp_path / "trial")
    data = ["emoji-scenes", "--out", str(tmp_path / "data" / "emoji-plain"), "--count", "12", "--sizes", "32"]
    assert data_main([*data, "--no-progress", "--processes", "1"]) == 0
    out = script.export(tmp_path, "base", "emoji", to=tmp_path / "trial")
    assert out == tmp_path / "trial" / "base" and not list((tmp_path / "trial").glob(".*"))
    kept = json.loads((out / "kept_tokens.json").read_text())["ids"]
    assert (
        5 < len(kept) < 200 and json.loads((out / "config.json").read_text())["options"]["token_rows"] == len(kept) + 1
    )
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["license"] == "CC BY-SA 4.0" and "OpenMoji" in provenance["attribution"]
    assert len(EmojiWorld.from_dict(provenance["world"]).emoji) >= 64
    assert "--pipeline emoji" in provenance["reproduce"] and provenance["total_steps"] == 17
    from finetune.model_folder import load_model_folder

    first = next(iter(ema))
    assert torch.equal(load_model_folder(out).model.state_dict()[first], ema[first].half().float())


def test_status_names_the_emoji_runs(tmp_path, capsys):
    script = load_script()
    script.main(["--pipeline", "emoji", "--root", str(tmp_path), "status"])
    out = capsys.readouterr().out
    assert "bundled-emoji-base" in out and "bundled-emoji-upsampler" in out


@pytest.fixture
def bundle_root(tmp_path, monkeypatch) -> Path:
    """finetune/bundled_weights stood in by an empty folder: no pipeline installed."""
    root = tmp_path / "weights"
    real = finetune.bundled_models.BUNDLED_PIPELINES
    monkeypatch.setattr(
        finetune.bundled_models, "bundled_pipeline_path", lambda pipeline="bundled": root / real[pipeline]
    )
    return root


def test_bundled_emoji_not_trained_yet_is_one_clear_line(bundle_root):
    with pytest.raises(ModelLoadError) as error:
        load_models("bundled-emoji", torch.device("cpu"))
    assert str(error.value) == "the bundled-emoji base model is not trained yet: see scripts/bundled/README.md"


def test_sampling_cli_says_not_trained_yet(bundle_root, capsys):
    from sampling.__main__ import main

    assert main(["generate", "a cat", "--model", "bundled-emoji", "--out", str(bundle_root / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not trained yet: see scripts/bundled/README.md" in err and "\n" not in err


def test_bundled_emoji_loads_its_own_pair_once_installed(bundle_root):
    save_random_model_folder(bundle_root / "emoji" / "base", TINY_BASE, 0)
    save_random_model_folder(bundle_root / "emoji" / "upsampler", TINY_UP, 1)
    pair = load_models("bundled-emoji", torch.device("cpu"))
    assert pair.base.image_size == 16 and pair.upsampler.image_size == 64
    assert Path(pair.base.source).parent == bundle_root / "emoji"
    with pytest.raises(ModelLoadError, match="bundled base model is not available"):  # the shapes pair is not
        load_models("bundled", torch.device("cpu"))


def test_studio_offers_bundled_emoji_only_when_installed(bundle_root):
    from sampling.studio.models import bundled_choices

    assert bundled_choices() == []
    save_random_model_folder(bundle_root / "emoji" / "base", TINY_BASE, 0)
    save_random_model_folder(bundle_root / "emoji" / "upsampler", TINY_UP, 1)
    (choice,) = bundled_choices()
    assert choice.key == "bundled-emoji" and choice.base_folder == bundle_root / "emoji" / "base"
    assert "CC BY-SA" in choice.label


def test_train_init_and_adapter_merge_take_the_emoji_name(bundle_root):
    from finetune.adapters.errors import AdapterError
    from finetune.adapters.model_names import resolve_model_folder
    from finetune.train.model_init import InitError, resolve_init

    with pytest.raises(InitError, match="^--init bundled-emoji: the bundled-emoji base model is not trained yet"):
        resolve_init("bundled-emoji")
    with pytest.raises(AdapterError, match="not trained yet: see scripts/bundled/README.md"):
        resolve_model_folder("bundled-emoji")
    save_random_model_folder(bundle_root / "emoji" / "base", TINY_BASE, 0)
    assert resolve_init("bundled-emoji") == str(bundle_root / "emoji" / "base")
    assert resolve_model_folder("bundled-emoji") == bundle_root / "emoji" / "base"


def test_the_emoji_story_speaks_the_bundled_emoji_world():
    """Every panel caption of sampling/examples/emoji_story.yaml is a canonical caption of a scene of the world the
    bundled-emoji models are trained on (one emoji at any place and size, or two small ones at two corners)."""
    world = EmojiWorld.from_dict(load_script().world_provenance("emoji")["world"])
    script = load_comic_script(example_scripts()["emoji_story"])
    captions = [panel.caption for page in script.pages for panel in page.panels]
    assert len(captions) >= 4

    def scene(subjects, background):
        attributes = {"subjects": subjects, "background": background}
        return canonical_emoji_caption(attributes, name_size=world.names_size(len(subjects)))

    for caption in captions:
        named = [e for e in world.emoji if f" {e} " in f" {caption} "]
        singles = [
            scene([{"emoji": e, "position": p, "size": z}], b)
            for e, p, z, b in itertools.product(named, world.positions, world.sizes, world.backgrounds)
        ]
        pairs = [
            scene([{"emoji": e, "position": p, "size": "small"}, {"emoji": f, "position": q, "size": "small"}], b)
            for e, f in itertools.permutations(named, 2)
            for p, q in itertools.permutations(world.corners, 2)
            for b in world.backgrounds
        ]
        assert caption in singles + pairs, caption


def shipped_emoji_world() -> EmojiWorld:
    base = finetune.bundled_models.bundled_pipeline_path("bundled-emoji") / "base"
    return EmojiWorld.from_dict(json.loads((base / "provenance.json").read_text())["world"])


def test_shipped_emoji_pair_is_fp16_ema_and_carries_the_openmoji_licence():
    root = finetune.bundled_models.bundled_pipeline_path("bundled-emoji")
    for kind in ("base", "upsampler"):
        config = json.loads((root / kind / "config.json").read_text())
        assert config["storage_dtype"] == "float16" and not config["has_ema"]
        provenance = json.dumps(json.loads((root / kind / "provenance.json").read_text()))
        assert "CC BY-SA 4.0" in provenance and "OpenMoji" in provenance
    assert len(shipped_emoji_world().emoji) >= 64


def test_main_job_draws_the_emoji_story_s_characters(tmp_path):
    """The README's main job: every panel of the emoji story, read back by the emoji evaluator, shows the emoji its
    caption names (one or two), on the caption's background."""
    from sampling.__main__ import main

    out = tmp_path / "comic"
    assert main(["comic", "emoji_story", "--model", "bundled-emoji", "--out", str(out), "--quiet"]) == 0
    world = shipped_emoji_world()
    metadata = json.loads((out / "comic.json").read_text())
    assert len(metadata["panels"]) == 4
    right = 0
    for panel in metadata["panels"]:
        caption = panel["caption"]
        read = read_emoji_scene(out / panel["file"], world)
        named = sorted(e for e in world.emoji if f" {e} " in f" {caption} ")
        drawn = sorted(s["emoji"] for s in read["subjects"])
        right += drawn == named and f" {read['background']} background" in caption
    assert right >= 3  # all four on this tree; one spare for another torch's float rounding
