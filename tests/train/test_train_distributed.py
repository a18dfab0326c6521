"""Data-parallel training on the CPU: `accelerate launch --multi_gpu --num_processes 2` (torchrun + gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from finetune.train import read_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_on_different_samples(tmp_path, shards32):
    run_dir = tmp_path / "ddp"
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "finetune",
        "train",
        "--run-dir",
        str(run_dir),
        "--data",
        str(shards32),
        "--preset",
        "tiny-base",
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--val-samples",
        "6",
        "--val-every",
        "0",
        "--sample-every",
        "-1",
        "--checkpoint-every",
        "0",
        "--log-sample-keys",
        "--no-progress",
        "--log-every",
        "1",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HOME": str(tmp_path / "hf")}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("done: 3 steps") == 1  # only the main process reports

    keys = {}
    for rank in (0, 1):
        lines = [json.loads(line) for line in (run_dir / f"sample_keys-rank{rank}.jsonl").read_text().splitlines()]
        assert [line["step"] for line in lines] == [1, 2, 3]
        keys[rank] = [k for line in lines for k in line["keys"]]
    assert len(keys[0]) == len(keys[1]) == 6
    assert not set(keys[0]) & set(keys[1])

    ckpt = run_dir / "checkpoints" / "step-00000003"
    assert (ckpt / "rank-00000.json").is_file() and (ckpt / "rank-00001.json").is_file()
    places = [json.loads((ckpt / f"rank-0000{r}.json").read_text())["data"] for r in (0, 1)]
    assert [p["world_size"] for p in places] == [2, 2] and [p["rank"] for p in places] == [0, 1]
    assert len(read_metrics(run_dir)) == 3
    assert (run_dir / "model" / "config.json").is_file()
