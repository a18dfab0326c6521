"""End-to-end training of a tiny preset from scratch: losses fall, logs/samples/checkpoints/model folder appear."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from train_settings import fast_config

from finetune.train import read_metrics, train
from finetune.train.resume_state import list_checkpoints


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory, shards32):
    run_dir = tmp_path_factory.mktemp("scratch_run")
    config = fast_config(
        log_every=4,
        run_dir=str(run_dir),
        data=[str(shards32)],
        preset="tiny-base",
        max_steps=16,
        lr=2e-3,
        val_every=8,
        sample_every=8,
        checkpoint_every=8,
        keep_checkpoints=1,
        num_sample_prompts=2,
        sample_steps="4",
        ema_decay=0.9,
    )
    result = train(config)
    return run_dir, result


def test_training_and_validation_losses_fall(scratch_run):
    run_dir, result = scratch_run
    assert result.step == 16 and not result.interrupted
    losses = [m["loss"] for m in read_metrics(run_dir)]
    assert len(losses) == 16 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])
    val = result.val_history
    assert [v["step"] for v in val] == [0, 8, 16]
    assert val[-1]["val/loss"] < 0.8 * val[0]["val/loss"]
    assert val[-1]["val/mse"] < val[0]["val/mse"]


def test_run_folder_holds_config_checkpoint_samples_and_model(scratch_run):
    run_dir, result = scratch_run
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["trainer"]["max_steps"] == 16 and resolved["model_options"]["image_size"] == 32
    assert resolved["preset"] == "tiny-base"
    ckpts = list_checkpoints(run_dir)
    assert [c.name for c in ckpts] == ["step-00000016"]  # keep_checkpoints=1 pruned step 8
    assert not any(p.name.startswith(".tmp") for p in (run_dir / "checkpoints").iterdir())
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == ["step-00000008.png", "step-00000016.png"]

    from safetensors.torch import load_file

    from finetune.model_folder import load_model_folder

    loaded = load_model_folder(result.model_dir, use_ema=True)
    assert loaded.tokenizer.name == "clip"
    ema = load_file(str(ckpts[-1] / "ema.safetensors"))
    for name, p in loaded.model.state_dict().items():
        assert torch.equal(p, ema[name])
    provenance = json.loads((result.model_dir / "provenance.json").read_text())
    assert provenance["steps"] == 16 and provenance["dataset_manifest_sha256"]
    assert provenance["trainer_config"]["preset"] == "tiny-base"


def test_tensorboard_has_scalars_and_sample_images(scratch_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = scratch_run
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in [
        "train/loss",
        "train/mse",
        "train/vb",
        "train/lr",
        "train/grad_norm",
        "train/samples_per_sec",
        "val/loss",
        "val/mse",
        "val/vb",
    ] + [f"train/loss_q{i}" for i in range(4)]:
        assert tag in scalars, tag
    assert [e.step for e in acc.Scalars("train/loss")] == [4, 8, 12, 16]
    assert all(e.value > 0 for e in acc.Scalars("train/samples_per_sec"))
    vb = [e.value for e in acc.Scalars("train/vb")]
    assert all(v > 0 for v in vb)  # the hybrid loss trains the variance too
    images = acc.Images("samples/grid")
    assert [im.step for im in images] == [8, 16]
    assert images[0].width == 2 * 32 and images[0].height == 32  # two prompts, one row
