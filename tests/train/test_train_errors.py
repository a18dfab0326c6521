"""Bad input and faults: clear errors before any training work, and the non-finite-loss guard in a real run."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_settings import fast_config
from train_synthetic_shards import write_shards

from finetune.diffusion import GaussianDiffusion
from finetune.train import ConfigError, read_metrics, train
from finetune.train.dataset_discovery import DatasetError
from finetune.train.guards import TrainingDiverged
from finetune.train.model_init import InitError
from finetune.train.resume_state import list_checkpoints


@pytest.fixture(scope="module")
def upsample_pt(tmp_path_factory, glide_fixtures):
    path = tmp_path_factory.mktemp("pt") / "upsample.pt"
    torch.save(load_file(str(glide_fixtures / "tiny_upsample_weights.safetensors")), path)
    return path


def _run(tmp_path, **settings):
    return train(
        fast_config(
            **{"run_dir": str(tmp_path / "run"), "preset": "tiny-base", "max_steps": 1, "val_samples": 0, **settings}
        )
    )


def test_bad_inputs_fail_before_training(tmp_path, shards32, upsample_pt, glide_fixtures):
    with pytest.raises(DatasetError, match="shard not found"):
        _run(tmp_path, data=[str(tmp_path / "nothing.tar")])
    with pytest.raises(DatasetError, match="without captions"):
        _run(tmp_path, data=[str(write_shards(tmp_path / "nocap", n=4, per_shard=4, captions=False))])
    with pytest.raises(DatasetError, match="wrong size"):
        _run(tmp_path, data=[str(write_shards(tmp_path / "small", n=4, size=16, per_shard=4))])
    with pytest.raises(InitError, match="another model/preset"):
        _run(
            tmp_path,
            data=[str(shards32)],
            init=str(upsample_pt),
            preset="tiny-base",
            vocab_path=str(glide_fixtures / "gpt2_bpe"),
        )
    with pytest.raises(InitError, match="neither 'scratch', a released model's name, nor an existing"):
        _run(tmp_path, data=[str(shards32)], init=str(tmp_path / "missing.pt"))
    not_a_pt = tmp_path / "junk.pt"
    not_a_pt.write_bytes(b"not a checkpoint")
    with pytest.raises(InitError, match="cannot read OpenAI checkpoint"):
        _run(tmp_path, data=[str(shards32)], init=str(not_a_pt), preset="tiny-base", vocab_path="x")
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        _run(tmp_path, data=[str(shards32)], mixed_precision="fp16")
    assert not list_checkpoints(tmp_path / "run")


def test_nonfinite_losses_are_skipped_then_training_stops(tmp_path, shards32, monkeypatch):
    real = GaussianDiffusion.training_losses
    calls = {"n": 0}
    poisoned = {2, 4, 5, 6}  # micro-batch calls that return NaN

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        out = real(self, *args, **kwargs)
        if calls["n"] in poisoned:
            out = {k: v * float("nan") for k, v in out.items()}
        return out

    monkeypatch.setattr(GaussianDiffusion, "training_losses", flaky)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="3 steps in a row"):
        _run(
            tmp_path,
            data=[str(shards32)],
            max_steps=10,
            nan_max_consecutive=3,
            checkpoint_every=1,
            keep_checkpoints=10,
            ema_decay=0.9,
        )
    metrics = read_metrics(run_dir)
    assert [m["skipped"] for m in metrics] == [None, "nonfinite", None, "nonfinite", "nonfinite"]
    assert metrics[1]["loss"] is None
    # a skipped step leaves the weights alone
    after1 = load_file(str(run_dir / "checkpoints" / "step-00000001" / "model.safetensors"))
    after2 = load_file(str(run_dir / "checkpoints" / "step-00000002" / "model.safetensors"))
    after3 = load_file(str(run_dir / "checkpoints" / "step-00000003" / "model.safetensors"))
    assert all(torch.equal(after1[k], after2[k]) for k in after1)
    assert any(not torch.equal(after2[k], after3[k]) for k in after2)
    assert all(torch.isfinite(v).all() for v in after3.values())
