"""End-to-end trainer throughput and peak memory: the real `finetune.train.train` loop (data loading from
WebDataset shards, tokenization, hybrid loss, AdamW, EMA) on synthetic shards from `python -m data_pipeline
synthetic`, for presets x batch sizes x precisions.

Each configuration runs in its own process, so peak memory is per configuration: peak RSS of the training
process (data workers not included) and, on a GPU, torch's peak allocated memory. Throughput is measured from the
per-step timestamps in metrics.jsonl after the warm-up steps.

    python bench/train_throughput.py                                   # tiny-base, batch 1,2,4, fp32 and bf16
    python bench/train_throughput.py --presets tiny-base,glide-base --batch-sizes 1,4 --steps 2 --warmup 1
    python bench/train_throughput.py --json bench/results/train_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import synthetic_shards

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `python -m finetune train` does


def _child(spec: dict) -> dict:
    """Run one configuration in this process and measure it."""
    import torch

    from finetune.train import build_config, read_metrics, train

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    run_dir = Path(spec["run_dir"])
    config = build_config(
        {
            "run_dir": str(run_dir),
            "data": [spec["data"]],
            "preset": spec["preset"],
            "batch_size": spec["batch_size"],
            "mixed_precision": spec["precision"],
            "max_steps": spec["warmup"] + spec["steps"],
            "num_workers": spec["workers"],
            "val_samples": 0,
            "sample_every": -1,
            "checkpoint_every": -1,
            "export_model": False,
            "progress": False,
            "log_every": 10_000,
            "ema_decay": 0.9999,
            "grad_checkpointing": spec["grad_checkpointing"],
            "shuffle_buffer": 256,
            "channels_last": spec["channels_last"],
        }
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    train(config)
    total = time.time() - started
    times = [m["time"] for m in read_metrics(run_dir)]
    measured = times[spec["warmup"] :]
    # time of the measured steps: from the end of the last warm-up step to the end of the last step
    span = measured[-1] - times[spec["warmup"] - 1] if spec["warmup"] else measured[-1] - started
    steps = len(measured)
    return {
        "preset": spec["preset"],
        "batch_size": spec["batch_size"],
        "precision": spec["precision"],
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "steps_measured": steps,
        "sec_per_step": span / steps,
        "samples_per_sec": steps * spec["batch_size"] / span,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "wall_total_sec": total,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny-base", help="comma-separated presets (e.g. tiny-base,glide-base)")
    parser.add_argument("--batch-sizes", default="1,2,4")
    parser.add_argument("--precisions", default="no,bf16", help="comma-separated: no, bf16, fp16 (GPU)")
    parser.add_argument("--steps", type=int, default=10, help="measured steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="steps before measuring")
    parser.add_argument("--workers", type=int, default=1, help="data-loading workers")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--channels-last", default="auto", choices=["auto", "yes", "no"])
    parser.add_argument("--images", type=int, default=512, help="synthetic images in the dataset")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_child(json.loads(args.child))), flush=True)
        return 0

    from finetune.model import get_preset

    results = []
    with tempfile.TemporaryDirectory(prefix="train_bench_") as tmp:
        root = Path(tmp)
        for preset in args.presets.split(","):
            size = get_preset(preset)["image_size"]
            data = synthetic_shards(root, size, args.images)
            for precision in args.precisions.split(","):
                for batch in [int(b) for b in args.batch_sizes.split(",")]:
                    spec = {
                        "preset": preset,
                        "batch_size": batch,
                        "precision": precision,
                        "steps": args.steps,
                        "warmup": args.warmup,
                        "workers": args.workers,
                        "threads": args.threads,
                        "grad_checkpointing": args.grad_checkpointing,
                        "data": str(data),
                        "channels_last": args.channels_last,
                        "run_dir": str(root / f"run-{preset}-{precision}-{batch}"),
                    }
                    proc = subprocess.run(
                        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True
                    )
                    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                    if proc.returncode != 0 or line is None:
                        print(f"{preset} {precision} batch {batch}: FAILED\n{proc.stderr[-2000:]}", file=sys.stderr)
                        continue
                    r = json.loads(line[len("RESULT ") :])
                    results.append(r)
                    gpu = f", peak GPU {r['peak_gpu_mib']:.0f} MiB" if r["peak_gpu_mib"] is not None else ""
                    print(
                        f"{preset:12s} {precision:4s} batch {batch}: {r['samples_per_sec']:8.2f} samples/s "
                        f"({r['sec_per_step']:.3f} s/step, {r['device']}, {r['threads']} threads), "
                        f"peak RSS {r['peak_rss_mib']:.0f} MiB{gpu}",
                        flush=True,
                    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
