"""Training-step speed of the GLIDE UNet: forward + backward + AdamW, samples/s and peak memory.

Configs: `tiny` (64px; 64 channels, 2 res blocks, mult 1,2,2,2, attention at 16 and 8, text 256
wide x 4 layers x 4 heads, 32 tokens; batch 8) and `glide-base` (OpenAI's base model; batch 1).
Each (config, precision) runs in a fresh subprocess so its peak memory is its own.

    python bench/model_step.py                       # both configs, fp32 and bf16 autocast
    python bench/model_step.py --configs tiny --precisions bf16 --steps 20
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = {
    "tiny": {
        "preset": "glide-base",
        "batch": 8,
        "overrides": {
            "image_size": 64,
            "num_channels": 64,
            "num_res_blocks": 2,
            "channel_mult": "1,2,2,2",
            "attention_resolutions": "16,8",
            "xf_width": 256,
            "xf_layers": 4,
            "xf_heads": 4,
            "text_ctx": 32,
        },
    },
    "glide-base": {"preset": "glide-base", "batch": 1, "overrides": {}},
}


def run_one(
    config: str,
    precision: str,
    steps: int,
    warmup: int,
    device: str,
    channels_last: bool,
    checkpointing: bool,
    compile_model: bool,
) -> dict:
    import torch

    from finetune.model import build_model, get_preset

    spec = CONFIGS[config]
    torch.manual_seed(0)
    model = build_model({**get_preset(spec["preset"]), **spec["overrides"]}).to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.set_gradient_checkpointing(checkpointing)
    step_model = torch.compile(model) if compile_model else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch, size, ctx = spec["batch"], model.image_size, model.text_ctx
    x = torch.randn(batch, 3, size, size, device=device)
    target = torch.randn(batch, 6, size, size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    tokens = torch.randint(0, model.vocab_size, (batch, ctx), device=device)
    mask = torch.arange(ctx, device=device)[None] < torch.randint(1, ctx + 1, (batch, 1), device=device)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        with autocast:
            out = step_model(x, t, tokens=tokens, mask=mask)
        loss = (out.float() - target).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - start
    if device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return {
        "config": config,
        "precision": precision,
        "device": device,
        "batch": batch,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "samples_per_s": round(steps * batch / elapsed, 3),
        "step_s": round(elapsed / steps, 3),
        "peak_mib": round(peak_mib),
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10 tiny, 3 glide-base)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--_one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._one:
        config, precision = args._one.split(":")
        steps = args.steps or (10 if config == "tiny" else 3)
        print(
            json.dumps(
                run_one(
                    config,
                    precision,
                    steps,
                    args.warmup,
                    args.device,
                    args.channels_last,
                    args.checkpointing,
                    args.compile,
                )
            )
        )
        return

    flags = [
        f
        for f, on in (
            ("--channels-last", args.channels_last),
            ("--checkpointing", args.checkpointing),
            ("--compile", args.compile),
        )
        if on
    ]
    print(f"{'config':<11} {'precision':<9} {'device':<6} {'batch':>5} {'samples/s':>10} {'s/step':>8} {'peak MiB':>9}")
    for config in args.configs:
        for precision in args.precisions:
            cmd = [
                sys.executable,
                __file__,
                "--_one",
                f"{config}:{precision}",
                "--warmup",
                str(args.warmup),
                "--device",
                args.device,
                *flags,
            ]
            if args.steps:
                cmd += ["--steps", str(args.steps)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(f"{config:<11} {precision:<9} failed:\n{done.stderr[-2000:]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{config:<11} {precision:<9} {r['device']:<6} {r['batch']:>5} {r['samples_per_s']:>10.3f} "
                f"{r['step_s']:>8.3f} {r['peak_mib']:>9}"
            )


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
