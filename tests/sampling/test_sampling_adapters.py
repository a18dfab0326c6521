"""`--adapter PATH[:SCALE]` on generate, inpaint and comic: each adapter acts on the model it was trained on, images
record adapters and scales, scale 0 gives the plain images, an adapter for another model is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from finetune.adapters import add_lora, save_adapter_folder
from finetune.adapters.specs import AdapterSpec
from finetune.model_folder import load_model_folder
from finetune.model_id import folder_model_id
from sampling.__main__ import main
from sampling.loading import load_models
from sampling.outputs import read_parameters
from sampling.pipeline import TextToImage
from sampling.settings import SamplerSettings
from tests.adapters.helpers import randomise_lora


def make_adapter(model_folder, out, rank: int = 2, seed: int = 2, std: float = 0.3):
    """An adapter folder with random nonzero factors for the model in `model_folder` (as trained on its EMA)."""
    model = load_model_folder(model_folder).model
    add_lora(model, rank)
    randomise_lora(model, seed=seed, std=std)
    return save_adapter_folder(model, out, folder_model_id(model_folder, use_ema=True), {"test": True})


@pytest.fixture(scope="module")
def adapters(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "base": make_adapter(tiny_models["pipeline"] / "base", root / "style"),
        "upsampler": make_adapter(tiny_models["pipeline"] / "upsampler", root / "sharp"),
        "inpaint": make_adapter(tiny_models["inpaint"] / "base", root / "inpaint-style"),
    }


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def generate(out, model, fast_args, *extra) -> tuple[int, list]:
    try:
        status = run_cli("generate", "a red boat", "--seed", "3", "--model", model, "--out", out, *fast_args, *extra)
    except SystemExit as exc:  # argparse's usage error
        status = exc.code
    return status, sorted(out.glob("0*.png"))


def test_generate_with_an_adapter_records_it_and_scale_zero_is_the_plain_model(
    tiny_models, adapters, fast_args, tmp_path, capsys
):
    model = tiny_models["pipeline"]
    _, [plain] = generate(tmp_path / "plain", model, fast_args)
    status, [styled] = generate(tmp_path / "styled", model, fast_args, "--adapter", adapters["base"])
    assert status == 0 and f"adapter {adapters['base']} (scale 1) on the base model" in capsys.readouterr().out
    assert np.abs(pixels(styled) - pixels(plain)).mean() > 1
    [recorded] = read_parameters(styled)["adapters"]
    assert recorded["path"] == str(adapters["base"]) and recorded["scale"] == 1.0 and recorded["model"] == "base"
    assert recorded["id"].startswith("style@") and "adapters" not in read_parameters(plain)

    _, [off] = generate(tmp_path / "off", model, fast_args, "--adapter", f"{adapters['base']}:0")
    assert np.abs(pixels(off) - pixels(plain)).max() <= 1  # the base's own images (up to rounding)
    # another scale is another image: a rerun into the same folder refuses to overwrite it
    status, _ = generate(tmp_path / "styled", model, fast_args, "--adapter", f"{adapters['base']}:0.5")
    assert status == 2 and "made with other settings" in capsys.readouterr().err


def test_an_upsampler_adapter_acts_on_the_upsampler(tiny_models, adapters, fast_args, tmp_path):
    model = tiny_models["pipeline"]
    _, [plain] = generate(tmp_path / "plain", model, fast_args)
    status, [sharp] = generate(tmp_path / "sharp", model, fast_args, "--adapter", f"{adapters['upsampler']}:0.8")
    assert status == 0 and np.abs(pixels(sharp) - pixels(plain)).mean() > 1
    [recorded] = read_parameters(sharp)["adapters"]
    assert (recorded["model"], recorded["scale"]) == ("upsampler", 0.8)


@pytest.mark.parametrize(
    "argument, message",
    [
        ("inpaint", "was trained on model inpaint/base@"),  # another model's adapter
        ("missing", "is not an adapter folder"),
        ("base:nan", "must be a finite number"),
    ],
)
def test_wrong_adapters_are_refused_in_one_line(tiny_models, adapters, fast_args, tmp_path, capsys, argument, message):
    name, _, scale = argument.partition(":")
    path = adapters.get(name, tmp_path / name)
    status, written = generate(
        tmp_path / "out", tiny_models["pipeline"], fast_args, "--adapter", f"{path}:{scale or 1}"
    )
    err = capsys.readouterr().err.strip()
    assert status == 2 and message in err and not written
    assert len(err.splitlines()) == 1 or (err.startswith("usage:") and message in err.splitlines()[-1])


def test_inpaint_and_comic_take_adapters(tiny_models, adapters, fast_args, tmp_path):
    rng = np.random.default_rng(1)
    image, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    Image.fromarray(np.where(np.arange(32)[None, :] < 16, 255, 0).repeat(32, 0).astype(np.uint8)).save(mask)
    out = tmp_path / "inpainted"
    args = ["inpaint", "a window", "--image", image, "--mask", mask, "--model", tiny_models["inpaint"], "--out", out]
    assert run_cli(*args, *fast_args, "--adapter", f"{adapters['inpaint']}:0.5") == 0
    [result] = out.glob("inpaint-*.png")
    assert read_parameters(result)["adapters"][0]["scale"] == 0.5

    script = tmp_path / "one.yaml"
    script.write_text("pages:\n  - panels:\n      - a boat\n      - a pier\n", encoding="utf-8")
    out = tmp_path / "comic"
    args = ["comic", script, "--model", tiny_models["pipeline"], "--out", out, "--no-upsample", *fast_args]
    assert run_cli(*args, "--adapter", adapters["base"]) == 0
    panels = sorted((out / "panels").glob("*.png"))
    assert len(panels) == 2 and all(read_parameters(p)["adapters"][0]["model"] == "base" for p in panels)


def test_setting_no_adapters_restores_the_models_exactly(tiny_models, adapters):
    pair = load_models(str(tiny_models["pipeline"]), torch.device("cpu"))
    pipeline = TextToImage(pair, torch.device("cpu"), base=SamplerSettings(steps=3))
    before = {k: v.clone() for k, v in pair.base.model.state_dict().items()}
    plain = np.asarray(pipeline.generate(["a boat"], [1], progress=False)[0].image)
    pipeline.set_adapters([AdapterSpec(adapters["base"], 1.0), AdapterSpec(adapters["upsampler"], 1.0)])
    assert [a["model"] for a in pipeline.adapters] == ["base", "upsampler"]
    assert not np.array_equal(np.asarray(pipeline.generate(["a boat"], [1], progress=False)[0].image), plain)
    pipeline.set_adapters([])
    assert pipeline.adapters == [] and "adapters" not in pipeline.parameters("a boat", 1)
    after = pair.base.model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert np.array_equal(np.asarray(pipeline.generate(["a boat"], [1], progress=False)[0].image), plain)
