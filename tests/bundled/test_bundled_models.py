"""The shipped bundled models (finetune/bundled_weights/) and the script that trains them
(scripts/bundled/train_bundled.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from data_pipeline.synthetic import World
from finetune.bundled_models import bundled_model_path, bundled_pipeline_path
from finetune.model import build_model, get_preset
from finetune.model_folder import load_model_folder

REPO = Path(__file__).resolve().parents[2]
MAX_BUNDLE_BYTES = 56 * 1024 * 1024  # both pipelines: shapes 34 MiB, emoji 18 MiB


def load_script():
    spec = importlib.util.spec_from_file_location("bundled_script", REPO / "scripts" / "bundled" / "train_bundled.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_bundle_is_small_fp16_and_ema_only():
    total = sum(p.stat().st_size for p in bundled_pipeline_path().rglob("*") if p.is_file())
    assert total <= MAX_BUNDLE_BYTES, f"bundled models take {total / 2**20:.1f} MiB"
    for kind in ("base", "upsampler"):
        path = bundled_model_path(kind)
        config = json.loads((path / "config.json").read_text())
        assert config["storage_dtype"] == "float16" and not config["has_ema"]
        with safe_open(str(path / "model.safetensors"), "pt") as fh:
            assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"F16"}


def test_bundle_provenance_names_world_and_steps():
    base = json.loads((bundled_model_path("base") / "provenance.json").read_text())
    up = json.loads((bundled_model_path("upsampler") / "provenance.json").read_text())
    assert World.from_dict(base["world"]) == World.from_dict(up["world"])
    assert base["total_steps"] > 0 and up["total_steps"] > 0
    assert "scripts/bundled/train_bundled.py" in base["reproduce"]


def test_bundled_pipeline_generates_at_both_sizes():
    from sampling.loading import load_models
    from sampling.pipeline import TextToImage
    from sampling.settings import SamplerSettings

    models = load_models(None, torch.device("cpu"))
    assert models.upsampler.image_size == 4 * models.base.image_size
    pipe = TextToImage(
        models,
        torch.device("cpu"),
        base=SamplerSettings(steps=4, guidance=3.0),
        upsampler=SamplerSettings(sampler="ddim", steps="4", guidance=None),
    )
    first = pipe.generate(["a large red circle in the center on a white background"], [7], progress=False)[0]
    again = pipe.generate(["a large red circle in the center on a white background"], [7], progress=False)[0]
    assert first.base_image.size == (32, 32) and first.image.size == (128, 128)
    assert first.image.tobytes() == again.image.tobytes()


def test_bundled_upsampler_keeps_the_background_colour_of_true_scenes():
    """Rendered 32 px scenes through the bundled upsampler at the pipeline's settings: the background stays its
    palette colour (from pure noise, as before, white came out pale green and gray mauve: errors of ~130)."""
    import numpy as np

    from data_pipeline.synthetic import PALETTE, canonical_caption, read_scene, render, sample_attributes, sample_rng
    from sampling.loading import load_sampling_model
    from sampling.pipeline import quantize_8bit, run_stage
    from sampling.settings import UPSAMPLER_DEFAULTS

    world = World.from_dict(json.loads((bundled_model_path("base") / "provenance.json").read_text())["world"])
    drawn = [sample_attributes(world, sample_rng(0, i)) for i in range(40)]
    scenes = [next(s for s in drawn if s["background"] == bg) for bg in ("white", "gray")]
    low = torch.from_numpy(np.stack([render(s, 32) for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    up = load_sampling_model(bundled_model_path("upsampler"), "upsampler", torch.device("cpu"))
    settings = UPSAMPLER_DEFAULTS.check(1000, "upsampler")
    generators = [torch.Generator().manual_seed(i) for i in range(len(scenes))]
    x, _ = run_stage(
        up,
        settings,
        [canonical_caption(s) for s in scenes],
        generators,
        torch.device("cpu"),
        torch.bfloat16,
        low_res=quantize_8bit(low),
    )
    images = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for image, scene in zip(images, scenes):
        read = read_scene(image, world)
        error = float(np.linalg.norm(np.asarray(read["background_rgb"]) - np.asarray(PALETTE[scene["background"]])))
        assert error < 25, f"{scene['background']} background came out {read['background_rgb']}"
        assert all(read[k] == scene[k] for k in ("shape", "color", "background"))


def _fake_run(root: Path, kind: str, step: int, options: dict) -> dict:
    """A training checkpoint as the trainer lays it out: weights, EMA weights, state.json."""
    from safetensors.torch import save_file

    torch.manual_seed(step)
    model = build_model(options)
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ckpt = root / f"bundled-{kind}" / "checkpoints" / f"step-{step:08d}"
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in ema.items()}, str(ckpt / "ema.safetensors"))
    (ckpt / "state.json").write_text(
        json.dumps(
            {"step": step, "model_options": build_model(options).options, "config": {"batch_size": 4, "grad_accum": 1}}
        )
    )
    (root / f"bundled-{kind}" / "lineage.json").write_text(json.dumps({"init": "scratch", "steps_before": 10}))
    return ema


def test_export_writes_newest_ema_in_fp16(tmp_path, monkeypatch):
    script = load_script()
    monkeypatch.setattr(script, "bundled_dir", lambda kind, pipeline="shapes": tmp_path / "bundled" / kind)
    options = get_preset("tiny-base")
    _fake_run(tmp_path, "base", 3, options)
    ema = _fake_run(tmp_path, "base", 5, options)

    out = script.export(tmp_path, "base")
    loaded = load_model_folder(out)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, ema[key].half().float()), key
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["run_steps"] == 5 and provenance["total_steps"] == 15 and provenance["weights"] == "EMA"
    assert World.from_dict(provenance["world"]).shapes == ("circle", "square", "triangle")


def test_train_resumes_else_continues_from_bundle_else_scratch(tmp_path, monkeypatch):
    script = load_script()
    calls = []
    monkeypatch.setattr(script, "build_dataset", lambda root, processes, pipeline="shapes", count=None: root / "data")
    monkeypatch.setattr(
        script.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw["env"])) or type("R", (), {"returncode": 0})()
    )
    monkeypatch.setattr(script, "make_scratch_init", lambda root, kind, seed=0, pipeline="shapes": root / "init" / kind)
    bundle = tmp_path / "bundle"
    monkeypatch.setattr(script, "bundled_dir", lambda kind, pipeline="shapes": bundle / kind)
    monkeypatch.setattr(script, "REPO", tmp_path)

    script.train(tmp_path, "base", None, 1, 1)  # nothing yet: from scratch
    assert calls[-1][0][-2:] == ["--init", str(tmp_path / "init" / "base")]
    assert calls[-1][1]["OMP_NUM_THREADS"] == "1"

    ckpt = tmp_path / "bundled-base" / "checkpoints" / "step-00000200"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text("{}")
    script.train(tmp_path, "base", 300, 2, 1)  # a checkpoint: exact resume
    assert calls[-1][0][-4:] == ["--resume", "latest", "--max-steps", "300"]

    (bundle / "upsampler").mkdir(parents=True)  # a new machine: no run folder, bundled weights present
    (bundle / "upsampler" / "config.json").write_text("{}")
    (bundle / "upsampler" / "provenance.json").write_text(json.dumps({"total_steps": 1200}))
    script.train(tmp_path, "upsampler", None, 1, 1)
    assert calls[-1][0][-2:] == ["--init", str(bundle / "upsampler")]
    lineage = json.loads((tmp_path / "bundled-upsampler" / "lineage.json").read_text())
    assert lineage["steps_before"] == 1200


@pytest.mark.parametrize("kind", ["base", "upsampler"])
def test_architecture_files_build(kind):
    options = json.loads((REPO / "scripts" / "bundled" / f"{kind}_model.json").read_text())
    options = {k: v for k, v in options.items() if not k.startswith("_")}
    shipped = load_model_folder(bundled_model_path(kind)).options
    assert {k: shipped[k] for k in options} == options
