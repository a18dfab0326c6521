"""`train --adapter lora`: only a LoRA adapter trains on the frozen --init model; checkpoints hold the adapter, its
EMA and the optimizer, and resume exactly; the export is an adapter folder naming the base model; the sample grid
shows the samples with and without the adapter side by side; wrong combinations are refused in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from train_settings import fast_config

from finetune.adapters import apply_adapters, read_adapter_config
from finetune.model import get_preset
from finetune.model_folder import load_model_folder
from finetune.model_id import folder_model_id
from finetune.train import ConfigError, build_config, read_metrics, train
from finetune.train.config import add_arguments, config_from_args
from finetune.train.resume_state import list_checkpoints
from tests.adapters.helpers import model_inputs, output
from tests.random_models import save_random_model_folder

STEPS = 6


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny base model folder with random weights (the model an adapter adapts)."""
    return save_random_model_folder(tmp_path_factory.mktemp("init") / "tiny", get_preset("tiny-base"), seed=5)


def _settings(run_dir, data, init, **more):
    settings = dict(
        run_dir=str(run_dir),
        data=[str(data)],
        init=str(init),
        adapter="lora",
        lora_rank=4,
        max_steps=STEPS,
        checkpoint_every=3,
        lr=1e-2,
        ema_decay=0.9,
        val_samples=0,
        seed=3,
        threads=1,
    )
    return {**settings, **more}


def _adapter_checkpoint(run_dir) -> dict[str, dict[str, torch.Tensor]]:
    final = list_checkpoints(run_dir)[-1]
    return {name: load_file(str(final / f"{name}.safetensors")) for name in ("model", "ema")}


def _prior_folder(root, n: int = 8, every: int = 1):
    """An imagefolder whose every `every`-th image is marked as a prior-preservation image."""
    root.mkdir()
    rows = []
    for i in range(n):
        rgb = np.full((32, 32, 3), (40 * i) % 256, np.uint8)
        rgb[8:24, 8:24] = (255, 30 * i, 0)
        Image.fromarray(rgb).save(root / f"{i}.png")
        prior = {"prior_preservation": "on"} if i % every == 0 else {}
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"shape {i}", **prior}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("prior_target", ["noise", "base"])
def test_adapter_run_stopped_and_resumed_matches_the_uninterrupted_run(tmp_path, shards32, tiny_folder, prior_target):
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    data = shards32 if prior_target == "noise" else _prior_folder(tmp_path / "half-prior", every=2)
    more = {"export_model": False, "prior_target": prior_target}
    train(fast_config(**_settings(straight_dir, data, tiny_folder, **more)))
    train(fast_config(**_settings(resumed_dir, data, tiny_folder, **more, max_steps=3)))
    resumed = train(build_config({"run_dir": str(resumed_dir), "resume": "latest", "max_steps": STEPS}))
    assert resumed.step == STEPS
    straight_steps, resumed_steps = read_metrics(straight_dir), read_metrics(resumed_dir)
    assert [m["step"] for m in resumed_steps] == list(range(1, STEPS + 1))
    assert [m["loss"] for m in resumed_steps] == [m["loss"] for m in straight_steps]
    a, b = _adapter_checkpoint(straight_dir), _adapter_checkpoint(resumed_dir)
    for name in ("model", "ema"):  # the adapter's factors and their EMA, and nothing of the frozen base
        assert a[name].keys() == b[name].keys() and all(".lora_" in k for k in a[name])
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name


def test_export_is_an_adapter_folder_that_changes_the_base_it_names(tmp_path, shards32, tiny_folder):
    run_dir = tmp_path / "run"
    settings = _settings(run_dir, shards32, tiny_folder, max_steps=3, sample_every=0, sample_steps="2")
    result = train(fast_config(**settings, num_sample_prompts=2))
    assert result.model_dir is None and result.adapter_dir == run_dir / "adapter"
    assert not (run_dir / "model").exists()
    adapter = read_adapter_config(result.adapter_dir)
    base_id = folder_model_id(tiny_folder, use_ema=True)
    assert adapter.base_model_id == base_id and adapter.settings.rank == 4
    assert adapter.provenance["trainer_config"]["adapter"] == "lora" and adapter.provenance["steps"] == 3
    assert adapter.provenance["dataset_manifest_sha256"]

    model = load_model_folder(tiny_folder).model.eval()
    inputs = model_inputs(model)
    before = output(model, inputs)
    apply_adapters(model, [(result.adapter_dir, 1.0)], base_model_id=base_id)
    assert not torch.allclose(output(model, inputs), before, atol=1e-4)
    apply_adapters(model, [(result.adapter_dir, 0.0)], base_model_id=base_id)
    torch.testing.assert_close(output(model, inputs), before)
    assert folder_model_id(tiny_folder, use_ema=True) == base_id  # the base folder is untouched

    grid = cv2.imread(str(run_dir / "samples" / "step-00000003.png"))
    assert grid.shape[:2] == (32, 2 * (2 * 32) + 8)  # with the adapter | gap | without
    with_adapter, without = grid[:, :64], grid[:, 72:]
    assert (grid[:, 64:72] == 255).all() and not (with_adapter == without).all()


@pytest.mark.parametrize("prior_target, keeps_base", [("base", True), ("noise", False)])
def test_prior_target_base_trains_the_prior_images_towards_the_base_output(
    tmp_path, tiny_folder, prior_target, keeps_base
):
    """Where every sample is a prior image and the loss is the eps MSE alone, `base` targets are exactly what the
    fresh adapter (B = 0) predicts: the loss is 0 and the adapter stays a no-op; with `noise` it learns."""
    data = _prior_folder(tmp_path / "prior")
    settings = _settings(tmp_path / "run", data, tiny_folder, max_steps=3, checkpoint_every=0, ema_decay=0.0)
    result = train(fast_config(**settings, loss_type="mse", prior_target=prior_target))
    losses = [m["loss"] for m in read_metrics(tmp_path / "run") if "loss" in m]
    assert (max(losses) == 0.0) == keeps_base and len(losses) == 3

    model = load_model_folder(tiny_folder).model.eval()
    inputs = model_inputs(model)
    before = output(model, inputs)
    apply_adapters(model, [(result.adapter_dir, 1.0)], base_model_id=folder_model_id(tiny_folder, use_ema=True))
    assert torch.equal(output(model, inputs), before) == keeps_base


@pytest.mark.parametrize(
    "name, shards, precision", [("tiny_upsample", "shards64", "no"), ("tiny_base_inpaint", "shards32", "bf16")]
)
def test_adapter_on_openai_upsampler_and_inpainting_checkpoints(
    tmp_path, request, glide_fixtures, name, shards, precision
):
    state = load_file(str(glide_fixtures / f"{name}_weights.safetensors"))
    pt = tmp_path / f"{name}.pt"
    torch.save(state, pt)
    run_dir = tmp_path / "run"
    settings = _settings(run_dir, request.getfixturevalue(shards), pt, max_steps=1, checkpoint_every=0)
    more = dict(vocab_path=str(glide_fixtures / "gpt2_bpe"), batch_size=2, grad_accum=2, mixed_precision=precision)
    result = train(fast_config(**settings, **more))
    assert result.step == 1 and read_metrics(run_dir)[0]["loss"] > 0
    adapter = read_adapter_config(result.adapter_dir)
    assert adapter.base_model_id.startswith(f"{name}@")
    assert all(".lora_" in k for k in load_file(str(list_checkpoints(run_dir)[-1] / "model.safetensors")))


def test_two_processes_train_one_adapter(tmp_path, shards32, tiny_folder):
    """accelerate launch with two CPU processes (gloo): DDP over the adapter's parameters only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "ddp"
    launch = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "-m", "finetune", "train"]
    settings = ["--run-dir", str(run_dir), "--data", str(shards32), "--init", str(tiny_folder), "--adapter", "lora"]
    settings += ["--lora-rank", "2", "--lora-targets", "qkv,encoder_kv", "--max-steps", "2", "--batch-size", "2"]
    settings += ["--num-workers", "0", "--val-samples", "0", "--sample-every", "-1", "--no-progress"]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(launch + settings, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count(f"done: 2 steps; adapter folder {run_dir / 'adapter'}") == 1
    adapter = read_adapter_config(run_dir / "adapter")
    assert (adapter.settings.rank, adapter.settings.targets) == (2, ("qkv", "encoder_kv"))


def test_resume_refuses_a_changed_base(tmp_path, shards32):
    init = save_random_model_folder(tmp_path / "base", get_preset("tiny-base"), seed=1)
    run_dir = tmp_path / "run"
    train(fast_config(**_settings(run_dir, shards32, init, max_steps=1, export_model=False)))
    save_random_model_folder(init, get_preset("tiny-base"), seed=2)  # other weights under the same name
    with pytest.raises(ConfigError, match="resume needs the same base weights"):
        train(build_config({"run_dir": str(run_dir), "resume": "latest", "max_steps": 2}))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"train_scope": "unet"}, "--train-scope unet cannot be combined"),
        ({"init": "scratch", "preset": "tiny-base"}, "--adapter adapts a trained model"),
        ({"lora_targets": ["qkv", "conv"]}, "unknown LoRA target"),
        ({"adapter": "", "lora_rank": 4}, "--lora-rank has no effect without --adapter lora"),
        ({"lora_rank": 0}, "--lora-rank must be >= 1"),
        ({"adapter": "", "prior_target": "base"}, "--prior-target has no effect without --adapter lora"),
    ],
)
def test_wrong_adapter_settings_are_refused_in_one_line(settings, message):
    values = {"run_dir": "r", "data": ["d"], "init": "some/folder", "adapter": "lora", **settings}
    with pytest.raises(ConfigError, match=message) as caught:
        build_config(values)
    assert "\n" not in str(caught.value) or message.startswith("--lora-rank must")


def test_command_line_reads_comma_separated_targets_and_the_defaults_come_from_the_adapter_code():
    import argparse

    from finetune.adapters import DEFAULT_RANK, DEFAULT_TARGETS

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = ["--run-dir", "r", "--data", "d", "--init", "m", "--adapter", "lora"]
    config = config_from_args(parser.parse_args([*args, "--lora-targets", "qkv,encoder_kv", "proj_out"]))
    assert config.lora_targets == ["qkv", "encoder_kv", "proj_out"]
    default = config_from_args(parser.parse_args(args))
    assert (default.lora_rank, tuple(default.lora_targets), default.lora_alpha) == (DEFAULT_RANK, DEFAULT_TARGETS, 0.0)


def test_an_adapter_of_the_bundled_base_names_the_id_sampling_gives_it(tmp_path, shards32):
    from sampling.loading import load_models

    run_dir = tmp_path / "run"
    settings = _settings(run_dir, shards32, "bundled", max_steps=1, checkpoint_every=0, batch_size=2, val_samples=4)
    result = train(fast_config(**settings))
    sampled = load_models("bundled", torch.device("cpu"), use_upsampler=False).base
    assert read_adapter_config(result.adapter_dir).base_model_id == sampled.model_id
    assert [v["step"] for v in result.val_history] == [1] and result.val_history[0]["val/loss"] > 0
