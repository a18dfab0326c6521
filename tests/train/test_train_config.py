"""Trainer settings (flags, YAML/TOML, validation), the CLI's error handling, and the step guards."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from finetune.__main__ import build_parser
from finetune.train import ConfigError, build_config
from finetune.train.config import config_from_args, merge_for_resume
from finetune.train.ema import EMA
from finetune.train.guards import StepGuard, TrainingDiverged, lr_factor


def _parse(*argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_flags_override_config_file_which_overrides_defaults(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(
        "run_dir: /tmp/r\ndata: [a, b]\npreset: tiny-base\nlr: 0.001\nbatch-size: 8\nmixed_precision: bf16\n"
    )
    config = _parse("--config", str(yaml_file), "--lr", "0.0005", "--no-progress")
    assert config.data == ["a", "b"] and config.batch_size == 8 and config.mixed_precision == "bf16"
    assert config.lr == 0.0005 and config.progress is False and config.uncond_p == 0.2
    toml_file = tmp_path / "run.toml"
    toml_file.write_text(
        'run_dir = "/tmp/r"\ndata = ["x"]\npreset = "tiny-base"\nsample_prompts = ["a cat"]\ngrad_accum = 4\n'
    )
    config = _parse("--config", str(toml_file))
    assert config.grad_accum == 4 and config.sample_prompts == ["a cat"]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"uncond_p": 1.5}, "--uncond-p must be <= 1.0"),
        ({"lr": 0}, "--lr must be > 0.0"),
        ({"batch_size": 0}, "--batch-size must be >= 1"),
        ({"mixed_precision": "fp8"}, "--mixed-precision must be one of"),
        ({"crop_scale_min": 0.9, "crop_scale_max": 0.5}, "must not exceed"),
        ({"preset": ""}, "--preset is required"),
        ({"lr": float("nan")}, "must be finite"),
        ({"max_steps": "ten"}, "--max-steps must be an integer"),
        ({"bogus": 1}, "unknown setting"),
        # what a hostile or careless form sends: refused before anything is allocated
        ({"batch_size": 10**9}, "--batch-size must be <= 4096"),
        ({"max_steps": 10**15}, "--max-steps must be <= 100000000"),
        ({"shuffle_buffer": 10**9}, "--shuffle-buffer must be <= 100000"),
        ({"val_samples": 10**9}, "--val-samples must be <= 100000"),
        ({"checkpoint_every": 10**12}, "--checkpoint-every must be <= 100000000"),
    ],
)
def test_out_of_range_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"run_dir": "/tmp/r", "data": ["d"], "preset": "tiny-base", **settings})


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    from finetune.__main__ import main

    base = ["train", "--run-dir", str(tmp_path / "r"), "--preset", "tiny-base", "--data", str(tmp_path / "missing")]
    assert main(base + ["--uncond-p", "2"]) == 2
    assert "--uncond-p must be <= 1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--uncond-p" in out and "--resume" in out and "--mixed-precision" in out
    # the real command line: a missing dataset is one clear line on stderr, exit status 2
    proc = subprocess.run([sys.executable, "-m", "finetune", *base], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "shard not found" in proc.stderr and "Traceback" not in proc.stderr


def test_convert_command_is_wired(tmp_path, capsys):
    from finetune.__main__ import main

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["convert", str(junk), "--preset", "tiny-base", "--out", str(tmp_path / "out")]) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_training_timesteps_cover_zero_to_last():
    from finetune.diffusion import build_diffusion

    t = build_diffusion(1000).sample_timesteps(200_000, generator=torch.Generator().manual_seed(0))
    assert int(t.min()) == 0 and int(t.max()) == 999
    assert abs(float(t.float().mean()) - 499.5) < 3


def test_resume_merge_keeps_saved_settings_and_refuses_changes():
    saved = build_config({"run_dir": "/r", "data": ["d"], "preset": "tiny-base", "lr": 1e-3, "max_steps": 10})
    given = build_config({"run_dir": "/r", "resume": "latest", "max_steps": 20})
    merged, changed = merge_for_resume(saved.to_dict(), given)
    assert merged.lr == 1e-3 and merged.max_steps == 20 and merged.data == ["d"] and merged.resume == "latest"
    assert changed == ["--max-steps=20"]
    with pytest.raises(ConfigError, match="--batch-size"):
        merge_for_resume(saved.to_dict(), build_config({"run_dir": "/r", "resume": "latest", "batch_size": 9}))
    # the pace and weighting of the steps may change on resume (the optimum does not)
    given = build_config(
        {
            "run_dir": "/r",
            "resume": "latest",
            "lr": 5e-4,
            "ema_decay": 0.999,
            "mse_weighting": "v",
            "mse_weight_cap": 50,
        }
    )
    merged, changed = merge_for_resume(saved.to_dict(), given)
    assert (merged.lr, merged.ema_decay, merged.mse_weighting, merged.mse_weight_cap) == (5e-4, 0.999, "v", 50.0)
    assert sorted(changed) == ["--ema-decay=0.999", "--lr=0.0005", "--mse-weight-cap=50.0", "--mse-weighting='v'"]


def test_nonfinite_guard_skips_then_stops_and_spike_guard():
    guard = StepGuard(3)
    assert guard.check(1, 1.0, 1.0) is None
    assert guard.check(2, float("nan"), 1.0) == "nonfinite"
    assert guard.check(3, 1.0, float("inf")) == "nonfinite"
    assert guard.check(4, 1.0, 1.0) is None  # a good step resets the streak
    guard.check(5, float("nan"), 1.0)
    guard.check(6, float("nan"), 1.0)
    with pytest.raises(TrainingDiverged, match="3 steps in a row"):
        guard.check(7, float("inf"), 1.0)
    spikes = StepGuard(3, spike_factor=3.0, spike_window=10)
    for step in range(10):
        assert spikes.check(step, 1.0 + 0.01 * step, 1.0) is None
    assert spikes.check(11, 10.0, 1.0) == "spike"
    assert spikes.check(12, 1.5, 1.0) is None
    restored = StepGuard(3, spike_factor=3.0, spike_window=10)
    restored.load_state_dict(spikes.state_dict())
    assert restored.check(13, 10.0, 1.0) == "spike"


def test_lr_schedule():
    assert lr_factor(0, 4, 100, "constant", 0) == 0.25
    assert lr_factor(3, 4, 100, "constant", 0) == 1.0
    assert lr_factor(4, 4, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 4, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(52, 4, 100, "linear", 0.0) == pytest.approx(0.5)


def test_ema_tracks_and_swaps_back():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.5)
    original = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first update: decay ramp min(0.5, 1/10) = 0.1
    expected = original * 0.1 + (original + 1.0) * 0.9
    torch.testing.assert_close(ema.shadow["weight"], expected)
    trained = model.weight.detach().clone()
    with ema.swapped_in(model):
        torch.testing.assert_close(model.weight, expected)
    assert torch.equal(model.weight, trained)
    assert np.isclose(ema.current_decay(), min(0.5, 2 / 11))
