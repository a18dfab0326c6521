"""End-to-end trainer throughput and peak memory: the real `finetune.train.train` loop (data loading from
WebDataset shards, tokenization, hybrid loss, AdamW, EMA) on synthetic shards from `python -m data_pipeline
synthetic`, for presets x batch sizes x precisions.

Each configuration runs in its own process, so peak memory is per configuration: peak RSS of the training
process (data workers not included) and, on a GPU, torch's peak allocated memory. Throughput is measured from the
per-step timestamps in metrics.jsonl after the warm-up steps.

    python bench/train_throughput.py                                   # tiny-base, batch 1,2,4, fp32 and bf16
    python bench/train_throughput.py --presets tiny-base,glide-base --batch-sizes 1,4 --steps 2 --warmup 1
    python bench/train_throughput.py --json bench/results/train_throughput.json
    python bench/train_throughput.py --init bundled --adapter-rank 8 --batch-sizes 4 --precisions no
                                          # fine-tuning the bundled base: whole model vs a rank-8 LoRA adapter
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
    start = {"init": spec["init"]} if spec["init"] else {"preset": spec["preset"]}
    if spec["adapter_rank"]:
        start.update(adapter="lora", lora_rank=spec["adapter_rank"])
    config = build_config(
        {
            **start,
            "run_dir": str(run_dir),
            "data": [spec["data"]],
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
        "trains": f"LoRA rank {spec['adapter_rank']}" if spec["adapter_rank"] else "whole model",
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


def _init_path(init: str) -> str:
    if init != "bundled":
        return init
    from finetune.bundled_models import bundled_model_path

    return str(bundled_model_path("base"))


def _image_size(init: str, preset: str) -> int:
    from finetune.model import get_preset
    from finetune.model_folder import read_config

    return int(read_config(init)["options"]["image_size"] if init else get_preset(preset)["image_size"])


def _configurations(args) -> list[tuple[str, int, int]]:
    """(precision, batch size, adapter rank or 0) of every run, the whole-model and adapter runs side by side."""
    ranks = [0, args.adapter_rank] if args.adapter_rank else [0]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    return [(p, b, r) for p in args.precisions.split(",") for b in batches for r in ranks]


def _run_child(spec: dict) -> dict | None:
    """One configuration in its own process; its figures (printed), or None when it failed."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    label = f"{spec['preset']} {spec['precision']} batch {spec['batch_size']}"
    if proc.returncode != 0 or line is None:
        print(f"{label}: FAILED\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    r = json.loads(line[len("RESULT ") :])
    gpu = f", peak GPU {r['peak_gpu_mib']:.0f} MiB" if r["peak_gpu_mib"] is not None else ""
    print(
        f"{spec['preset']:12s} {r['trains']:12s} {spec['precision']:4s} batch {spec['batch_size']}: "
        f"{r['samples_per_sec']:8.2f} samples/s ({r['sec_per_step']:.3f} s/step, {r['device']}, "
        f"{r['threads']} threads), peak RSS {r['peak_rss_mib']:.0f} MiB{gpu}",
        flush=True,
    )
    return r


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
    parser.add_argument(
        "--init",
        default="",
        help="fine-tune this model folder or name ('bundled': the bundled base) instead of presets",
    )
    parser.add_argument(
        "--adapter-rank", type=int, default=0, help="with --init: also train a LoRA adapter of this rank (0 = not)"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_child(json.loads(args.child))), flush=True)
        return 0

    init = _init_path(args.init)
    if args.adapter_rank and not init:
        parser.error("--adapter-rank needs --init (an adapter adapts a trained model)")
    results = []
    with tempfile.TemporaryDirectory(prefix="train_bench_") as tmp:
        root = Path(tmp)
        for preset in [Path(init).name] if init else args.presets.split(","):
            data = synthetic_shards(root, _image_size(init, preset), args.images)
            for precision, batch, rank in _configurations(args):
                spec = {
                    "preset": preset,
                    "init": init,
                    "adapter_rank": rank,
                    "batch_size": batch,
                    "precision": precision,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "workers": args.workers,
                    "threads": args.threads,
                    "grad_checkpointing": args.grad_checkpointing,
                    "data": str(data),
                    "channels_last": args.channels_last,
                    "run_dir": str(root / f"run-{preset}-{precision}-{batch}-{rank}"),
                }
                result = _run_child(spec)
                if result is not None:
                    results.append(result)
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
