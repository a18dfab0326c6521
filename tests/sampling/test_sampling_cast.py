"""Comic scripts with a cast: characters' descriptions and adapters in the panels that name them, adapters applied
once per adapter set and recorded in every panel's and page's metadata, bad casts refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from finetune.adapters import AdapterError, add_lora, save_adapter_folder
from finetune.adapters import apply as apply_module
from finetune.adapters.lora import lora_layers
from finetune.adapters.specs import AdapterSpec
from finetune.model_folder import load_model_folder
from finetune.model_id import folder_model_id, model_id_for
from sampling.comic.book import make_comic
from sampling.comic.script import ScriptError, load_script, parse_script
from sampling.loading import load_models
from sampling.outputs import read_parameters
from sampling.pipeline import TextToImage
from sampling.settings import SamplerSettings
from tests.adapters.helpers import randomise_lora

FAST_BASE = SamplerSettings(sampler="dpmpp_2m", steps=3, guidance=3.0)
CPU = torch.device("cpu")


def make_adapter(base_folder, out, seed: int):
    model = load_model_folder(base_folder).model
    add_lora(model, rank=2, targets=("qkv", "encoder_kv", "transformer_proj"))
    randomise_lora(model, seed=seed, std=0.3)
    return save_adapter_folder(model, out, folder_model_id(base_folder))


@pytest.fixture(scope="module")
def adapters(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("cast_adapters")
    base = tiny_models["pipeline"] / "base"
    return {"zorp": make_adapter(base, root / "zorp", 3), "ink": make_adapter(base, root / "ink", 4), "root": root}


def write_script(folder, text: str):
    path = folder / "script.yaml"
    path.write_text(text)
    return path


CAST_SCRIPT = """
title: Zorp
style: flat colours
style_adapter: ink:0.5
cast:
  Zorp:
    description: a purple star
    adapter: zorp
  Bob: a red circle
panels:
  - zorp on a cyan background
  - caption: a square
    cast: [bob]
  - a blue circle
  - caption: zorp meets bob
"""


def test_cast_descriptions_and_adapters_reach_the_panels_that_name_them(adapters):
    script = load_script(write_script(adapters["root"], CAST_SCRIPT))
    zorp, explicit_bob, nobody, both = script.pages[0].panels
    assert script.prompt_for(zorp) == "a purple star, zorp on a cyan background, flat colours"
    assert script.prompt_for(explicit_bob) == "a red circle, a square, flat colours"
    assert script.prompt_for(nobody) == "a blue circle, flat colours"
    assert [m.name for m in script.cast_of(both)] == ["Zorp", "Bob"]
    ink, zorp_adapter = script.style_adapter, script.cast[0].adapter
    assert (ink.path, ink.scale) == (adapters["ink"], 0.5)  # relative to the script's folder
    assert script.adapters_for(zorp) == (ink, zorp_adapter)
    assert script.adapters_for(nobody) == (ink,)
    assert script.adapters_for(explicit_bob) == (ink,)  # bob has no adapter


def test_a_name_inside_another_word_is_not_the_character(adapters):
    script = load_script(write_script(adapters["root"], "cast: {zorp: {adapter: zorp}}\npanels: [zorpish sky]\n"))
    assert script.cast_of(script.pages[0].panels[0]) == ()


@pytest.mark.parametrize(
    "text, message",
    [
        ("cast: {zorp: x}\npanels: [{caption: a, cast: [bob]}]", "panels[0].cast[0]: 'bob' is not in the cast"),
        ("cast: {'9lives': x}\npanels: [a]", "cast.9lives: cast name '9lives' must be"),
        ("cast: {Zorp: x, zorp: y}\npanels: [a]", "two cast members have this name"),
        ("cast: {zorp: {adapter: 'zorp:99'}}\npanels: [a]", "must be a finite number"),
        ("cast: {zorp: {colour: red}}\npanels: [a]", "cast.zorp.colour: unknown field"),
        ("cast: [zorp]\npanels: [a]", "cast: expected a mapping"),
        ("style_adapter: ''\npanels: [a]", "style_adapter: empty adapter path"),
        (
            "cast: {" + ", ".join(f"n{chr(97 + i // 26)}{chr(97 + i % 26)}: x" for i in range(33)) + "}\npanels: [a]",
            "at most 32 characters",
        ),
    ],
)
def test_bad_casts_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(ScriptError) as error:
        load_script(write_script(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(tmp_path / "script.yaml") in str(error.value)


def test_the_studio_keeps_adapters_inside_its_folder(adapters, tmp_path):
    data = {"cast": {"zorp": {"adapter": "../elsewhere"}}, "panels": ["a"]}
    with pytest.raises(ScriptError, match="outside the adapters folder"):
        parse_script(data, "studio", adapter_root=adapters["root"])
    data["cast"]["zorp"]["adapter"] = str(tmp_path)  # an absolute path elsewhere
    with pytest.raises(ScriptError, match="outside the adapters folder"):
        parse_script(data, "studio", adapter_root=adapters["root"])
    data["cast"]["zorp"]["adapter"] = "zorp:0.7"
    script = parse_script(data, "studio", adapter_root=adapters["root"])
    assert (script.cast[0].adapter.path, script.cast[0].adapter.scale) == (adapters["zorp"].resolve(), 0.7)


@pytest.fixture
def pipeline(tiny_models):
    return TextToImage(load_models(str(tiny_models["pipeline"]), CPU, use_upsampler=False), CPU, base=FAST_BASE)


def test_a_script_with_a_cast_renders_one_adapter_set_at_a_time(adapters, pipeline, tmp_path, monkeypatch):
    calls = []
    real_apply = apply_module.apply_adapters
    monkeypatch.setattr(apply_module, "apply_adapters", lambda m, a, **k: calls.append(len(a)) or real_apply(m, a, **k))
    script = load_script(write_script(adapters["root"], CAST_SCRIPT))
    result = make_comic(script, pipeline, tmp_path / "out", progress=False)
    # Three sets (ink; ink + zorp for panels 1 and 4), each applied once and removed after.
    assert sorted(calls) == [0, 0, 1, 2]
    assert not list(lora_layers(pipeline.models.base.model))
    recorded = {ref: read_parameters(path).get("adapters") for ref, path in result.panels.items()}
    ink, zorp = (
        {"path": str(adapters[name]), "id": model_id_for(adapters[name]), "scale": scale, "model": "base"}
        for name, scale in (("ink", 0.5), ("zorp", 1.0))
    )
    assert recorded[(1, 1)] == recorded[(1, 4)] == [ink, zorp]
    assert recorded[(1, 2)] == recorded[(1, 3)] == [ink]
    assert read_parameters(result.pages[0])["panels"][0]["adapters"] == [ink, zorp]
    comic = json.loads((tmp_path / "out" / "comic.json").read_text())
    assert [p["cast"] for p in comic["panels"]] == [["Zorp"], ["Bob"], [], ["Zorp", "Bob"]]
    assert comic["style_adapter"].endswith("ink:0.5")


def test_the_adapter_changes_its_panels_and_a_rerun_skips_them(adapters, pipeline, tmp_path):
    script_text = "cast: {zorp: {adapter: zorp}}\nseed: 5\npanels: [zorp on a cyan background, a red square]\n"
    plain_text = "seed: 5\npanels: [zorp on a cyan background, a red square]\n"
    with_cast = make_comic(
        load_script(write_script(adapters["root"], script_text)), pipeline, tmp_path / "a", progress=False
    )
    (tmp_path / "b").mkdir()
    plain = make_comic(load_script(write_script(tmp_path / "b", plain_text)), pipeline, tmp_path / "c", progress=False)
    runs = {"cast": with_cast, "plain": plain}
    pixels = {key: [np.asarray(Image.open(r.panels[(1, q)])) for q in (1, 2)] for key, r in runs.items()}
    assert np.abs(pixels["cast"][0].astype(int) - pixels["plain"][0]).max() > 8  # zorp's adapter changed its panel
    assert np.array_equal(pixels["cast"][1], pixels["plain"][1])  # the panel without zorp is the base's
    again = make_comic(load_script(adapters["root"] / "script.yaml"), pipeline, tmp_path / "a", progress=False)
    assert again.generated == [] and len(again.skipped) == 2


def test_an_adapter_for_another_model_is_refused_before_anything_is_written(adapters, tiny_models, tmp_path):
    up = tiny_models["pipeline"] / "upsampler"
    stray = save_adapter_folder(_with_lora(up), tmp_path / "stray", "other@0123456789ab")
    script = load_script(write_script(tmp_path, f"cast: {{zorp: {{adapter: {stray}}}}}\npanels: [zorp]\n"))
    models = load_models(str(tiny_models["pipeline"]), CPU, use_upsampler=False)
    with pytest.raises(AdapterError, match="was trained on model other@0123456789ab") as error:
        make_comic(script, TextToImage(models, CPU, base=FAST_BASE), tmp_path / "out", progress=False)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


def test_the_pipelines_own_adapters_act_on_every_panel_and_stay_applied(adapters, pipeline, tmp_path):
    pipeline.set_adapters([AdapterSpec(adapters["ink"], 0.25)])  # what the command line's --adapter does
    script = load_script(write_script(adapters["root"], "cast: {zorp: {adapter: zorp}}\npanels: [zorp, a square]\n"))
    result = make_comic(script, pipeline, tmp_path / "out", progress=False)
    recorded = [[a["path"] for a in read_parameters(result.panels[(1, q)])["adapters"]] for q in (1, 2)]
    assert recorded == [[str(adapters["ink"]), str(adapters["zorp"])], [str(adapters["ink"])]]
    assert [(a["path"], a["scale"]) for a in pipeline.adapters] == [(str(adapters["ink"]), 0.25)]
    pipeline.set_adapters([])


def _with_lora(folder):
    model = load_model_folder(folder).model
    add_lora(model, rank=2, targets=("qkv",))
    return model


def test_comic_check_lists_each_panels_adapters(adapters, capsys):
    from sampling.__main__ import main

    path = write_script(adapters["root"], CAST_SCRIPT)
    assert main(["comic", str(path), "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ink, zorp = adapters["ink"], adapters["zorp"]
    assert lines[2].endswith(
        f"'a purple star, zorp on a cyan background, flat colours' [adapters: {ink}:0.5, {zorp}:1]"
    )
    assert lines[4].endswith(f"'a blue circle, flat colours' [adapters: {ink}:0.5]")
