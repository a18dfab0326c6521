"""Exact resume: a run stopped with SIGTERM, resumed, killed with SIGKILL and resumed again repeats the
uninterrupted run's per-step losses and ends with the same weights; checkpoints are whole or absent; settings
that would change the run are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from train_settings import FAST, fast_config

from finetune.train import ConfigError, build_config, read_metrics, train
from finetune.train.resume_state import list_checkpoints

STEPS = 10


def _settings(run_dir, shards):
    # two data workers and a shuffle buffer make the data position non-trivial; one thread in every part (in-process
    # and in the subprocesses alike), since another thread count sums in another order
    return dict(
        run_dir=str(run_dir),
        data=[str(shards)],
        preset="tiny-base",
        max_steps=STEPS,
        num_workers=2,
        shuffle_buffer=8,
        checkpoint_every=3,
        keep_checkpoints=2,
        lr=1e-3,
        ema_decay=0.99,
        val_samples=0,
        uncond_p=0.3,
        seed=7,
        lr_warmup_steps=2,
        lr_schedule="cosine",
        threads=1,
    )


def _cli_args(settings: dict) -> list[str]:
    args = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return args


def _run_until(cmd: list[str], metrics, lines: int, sig: int) -> tuple[int, str]:
    """Start the CLI, send `sig` once metrics.jsonl has `lines` steps, return (exit status, output)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= lines:
            proc.send_signal(sig)
            break
        time.sleep(0.01)
    out, _ = proc.communicate(timeout=240)
    return proc.returncode, out


def _last_checkpoint_step(run_dir) -> int:
    return int(list_checkpoints(run_dir)[-1].name.split("-")[1])


def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path, shards32):
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    straight = train(fast_config(**_settings(straight_dir, shards32)))
    assert straight.step == STEPS
    metrics = resumed_dir / "metrics.jsonl"

    # SIGTERM: the run checkpoints the step it is on and exits with 128 + 15
    cmd = [sys.executable, "-m", "finetune", "train", *_cli_args({**FAST, **_settings(resumed_dir, shards32)})]
    status, out = _run_until(cmd, metrics, 2, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, out
    assert "stopped by signal" in out
    stopped_at = _last_checkpoint_step(resumed_dir)
    assert 2 <= stopped_at < STEPS - 3

    # SIGKILL after a few more steps: everything since the last checkpoint is lost and will be redone
    resume_cmd = [
        sys.executable,
        "-m",
        "finetune",
        "train",
        "--run-dir",
        str(resumed_dir),
        "--resume",
        "latest",
        "--no-progress",
    ]
    status, out = _run_until(resume_cmd, metrics, stopped_at + 3, signal.SIGKILL)
    assert status == -signal.SIGKILL, out
    assert len(metrics.read_text().splitlines()) > _last_checkpoint_step(resumed_dir)

    resumed = train(build_config({"run_dir": str(resumed_dir), "resume": "latest", "progress": False}))
    assert resumed.step == STEPS

    a = read_metrics(straight_dir)
    b = read_metrics(resumed_dir)
    assert [m["step"] for m in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-6), (x, y)
        assert y["lr"] == pytest.approx(x["lr"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(resumed_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, STEPS + 1))  # steps the killed run logged after its checkpoint were purged
    final_a = list_checkpoints(straight_dir)[-1]
    final_b = list_checkpoints(resumed_dir)[-1]
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(final_a / name)), load_file(str(final_b / name))
        for key in wa:
            torch.testing.assert_close(wb[key], wa[key], rtol=1e-5, atol=1e-6)


def test_resume_refuses_changed_settings_and_fresh_run_refuses_existing_checkpoints(tmp_path, shards32):
    run_dir = tmp_path / "run"
    settings = dict(
        run_dir=str(run_dir), data=[str(shards32)], preset="tiny-base", max_steps=2, val_samples=0, export_model=False
    )
    train(fast_config(**settings))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(fast_config(**settings))
    with pytest.raises(ConfigError, match="--batch-size"):
        train(build_config({"run_dir": str(run_dir), "resume": "latest", "batch_size": 3}))
    # nothing to do: already at max_steps; a larger max_steps continues
    result = train(build_config({"run_dir": str(run_dir), "resume": "latest", "max_steps": 3, "progress": False}))
    assert result.step == 3 and [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3]


def test_partial_checkpoint_folders_are_ignored_and_cleaned(tmp_path, shards32):
    run_dir = tmp_path / "run"
    train(
        fast_config(
            run_dir=str(run_dir),
            data=[str(shards32)],
            preset="tiny-base",
            max_steps=1,
            val_samples=0,
            export_model=False,
        )
    )
    # a writer killed mid-checkpoint leaves only a hidden temporary folder
    partial = run_dir / "checkpoints" / ".tmp-step-00000009"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-00000001"]
    train(build_config({"run_dir": str(run_dir), "resume": "latest", "max_steps": 2, "progress": False}))
    assert not partial.exists()
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-00000001", "step-00000002"]
