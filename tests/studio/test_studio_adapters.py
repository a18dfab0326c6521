"""The studio's adapters: picked by name from the adapters folder only (the allow-list rule of its models), applied
to a strip and recorded in its files, refused for another model; the Train tab trains one into that folder."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from finetune.adapters import add_lora, save_adapter_folder
from finetune.model import get_preset
from finetune.model_folder import load_model_folder
from finetune.model_id import folder_model_id
from sampling.outputs import read_parameters
from sampling.studio.adapters import discover_adapters, resolve_adapter
from sampling.studio.service import Studio, StudioConfig, StudioError
from tests.adapters.helpers import randomise_lora
from tests.random_models import save_random_model_folder

CAPTIONS = "a red boat\na blue bird"


def make_adapter(model_folder, out, seed: int = 2):
    model = load_model_folder(model_folder).model
    add_lora(model, 2)
    randomise_lora(model, seed=seed, std=0.3)
    return save_adapter_folder(model, out, folder_model_id(model_folder, use_ema=True))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """models/tiny-random and models/other; adapters/style (for tiny-random), adapters/elsewhere (for other),
    adapters/broken (a bad config), adapters/escape (a symlink to an adapter outside), outside/secret."""
    root = tmp_path_factory.mktemp("studio")
    models, adapters = root / "models", root / "adapters"
    save_random_model_folder(models / "tiny-random", get_preset("tiny-base"), seed=0)
    save_random_model_folder(models / "other", get_preset("tiny-base"), seed=1)
    make_adapter(models / "tiny-random", adapters / "style")
    make_adapter(models / "other", adapters / "elsewhere")
    make_adapter(models / "tiny-random", root / "outside" / "secret")
    (adapters / "broken").mkdir()
    (adapters / "broken" / "adapter_config.json").write_text("{not json")
    (adapters / "broken" / "adapter.safetensors").write_bytes(b"")
    (adapters / "escape").symlink_to(root / "outside" / "secret")
    (adapters / "notes").mkdir()  # no adapter config: not an adapter, not listed
    return {"root": root, "models": models, "adapters": adapters, "outside": root / "outside" / "secret"}


def studio_for(folders, workdir) -> Studio:
    config = StudioConfig(
        workdir=workdir, models_dir=folders["models"], adapters_dir=folders["adapters"], semantic_search=False
    )
    return Studio(config)


def test_only_adapter_folders_inside_the_adapters_folder_are_offered(folders, tmp_path):
    studio = studio_for(folders, tmp_path)
    assert [name for _, name in studio.adapter_choices()] == ["elsewhere", "style"]
    assert dict(studio.adapter_choices())["style (for tiny-random)"] == "style"
    broken = studio.broken_adapters()
    assert len(broken) == 2 and broken[0].startswith("adapter broken: ") and "not valid JSON" in broken[0]
    assert broken[1] == "adapter escape: its real location is outside the adapters folder"
    assert str(folders["root"]) not in " ".join(broken)  # names, never the server's paths
    assert {c.name for c in discover_adapters(folders["adapters"])} == {"broken", "elsewhere", "escape", "style"}


@pytest.mark.parametrize(
    "name",
    ["escape", "broken", "notes", "../outside/secret", "OUTSIDE", "style/", "", None, 3, ["style"]],
)
def test_anything_but_a_listed_name_is_refused_alike(folders, tmp_path, name):
    for value in (name, str(folders["outside"]), str(folders["adapters"] / "style")):  # paths, even of listed ones
        if value in ("", None):
            continue
        with pytest.raises(ValueError, match="^that adapter is not one of the studio's adapters; pick one"):
            resolve_adapter(value, folders["adapters"])
    if name:
        with pytest.raises(StudioError, match="not one of the studio's adapters"):
            studio_for(folders, tmp_path).generate("models/tiny-random", CAPTIONS, 3, 2, "ddim", 0, adapter=(name, 1))


def test_a_strip_with_an_adapter_records_it_and_another_models_adapter_is_refused(folders, tmp_path):
    studio = studio_for(folders, tmp_path)
    plain = studio.generate("models/tiny-random", CAPTIONS, 3, 2, "ddim", 0)
    styled = studio.generate("models/tiny-random", CAPTIONS, 3, 2, "ddim", 0, adapter=("style", 0.8))
    [recorded] = styled.adapters
    assert (recorded["scale"], recorded["model"], recorded["id"].split("@")[0]) == (0.8, "base", "style")
    assert styled.params["adapters"] == [recorded] and "adapters" not in plain.params
    assert read_parameters(styled.panels[0])["adapters"] == [recorded]
    assert read_parameters(styled.strip)["adapters"] == [recorded]
    with Image.open(plain.panels[0]) as a, Image.open(styled.panels[0]) as b:
        assert a.tobytes() != b.tobytes()
    again = studio.generate("models/tiny-random", CAPTIONS, 3, 2, "ddim", 0)  # the adapter is off again
    with Image.open(plain.panels[0]) as a, Image.open(again.panels[0]) as b:
        assert a.tobytes() == b.tobytes()

    with pytest.raises(StudioError, match="adapter elsewhere was trained on model other@") as caught:
        studio.generate("models/tiny-random", CAPTIONS, 3, 2, "ddim", 0, adapter=("elsewhere", 1))
    assert str(folders["root"]) not in str(caught.value)
    with pytest.raises(StudioError, match="must be a finite number"):
        studio.generate("models/tiny-random", CAPTIONS, 3, 2, "ddim", 0, adapter=("style", float("inf")))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from data_pipeline.__main__ import main

    root = tmp_path_factory.mktemp("datasets")
    args = ["synthetic", "--out", str(root / "shapes"), "--count", "24", "--sizes", "32", "--image-format", "png"]
    args += ["--shard-size", "12", "--val-fraction", "0.2", "--processes", "1", "--no-progress"]
    assert main(args) == 0
    return root


def test_the_train_tab_trains_an_adapter_into_the_adapters_folder(folders, datasets, tmp_path):
    adapters = tmp_path / "adapters"
    config = StudioConfig(
        workdir=tmp_path / "work",
        models_dir=folders["models"],
        datasets_dir=datasets,
        adapters_dir=adapters,
        semantic_search=False,
    )
    studio = Studio(config)
    settings = {"data": ["shapes"], "init": "models/tiny-random", "max_steps": 2, "batch_size": 2, "progress": False}
    settings.update({"sample_every": -1, "checkpoint_every": 0, "val_samples": 0, "threads": 1})
    lora = {"adapter": "lora", "lora_rank": 2, "lora_targets": ["qkv", "encoder_kv"]}
    for name, message in (("../up", "an adapter name is 1 to 64"), ("", "--adapter adapts a trained model")):
        with pytest.raises(StudioError, match=message):
            studio.start_training({**settings, **lora, "adapter_name": name, "init": "scratch", "preset": "tiny-base"})
    job = studio.start_training({**settings, **lora, "adapter_name": "boats"})
    assert job.process.wait(timeout=600) == 0, job.progress().log_tail
    assert studio.training_progress().describe().endswith(f"adapter in {adapters / 'boats'}")
    assert [name for _, name in studio.adapter_choices()] == ["boats"]
    written = json.loads((adapters / "boats" / "adapter_config.json").read_text())
    assert written["rank"] == 2 and written["targets"] == ["qkv", "encoder_kv"]
    assert written["base_model_id"] == folder_model_id(folders["models"] / "tiny-random", use_ema=True)
    with pytest.raises(StudioError, match="an adapter named 'boats' already exists"):
        studio.start_training({**settings, **lora, "adapter_name": "boats"})
    strip = studio.generate("models/tiny-random", CAPTIONS, 3, 2, "ddim", 0, adapter=("boats", 1))
    assert strip.adapters[0]["id"].startswith("boats@")
