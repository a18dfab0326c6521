"""Per-image cost of sampling with LoRA adapters applied, against the same model without them.

    python bench/adapter_overhead.py                      # bundled 32px base, CPU, rank 8, default targets
    python bench/adapter_overhead.py --rank 16 --batches 1,8 --repeats 5
    python bench/adapter_overhead.py --targets all        # every layer `adapter teach` wraps, convolutions too

Adapters get random nonzero weights (trained ones cost exactly the same). Figures: CPU seconds per image (best of
--repeats, the setups taking turns) without adapters, with one and with two mixed, fused into the weights as the
sampling commands apply them, and with one left as separate low-rank layers (unfused); and the adapter file's size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from finetune.adapters import DEFAULT_TARGETS, KNOWN_TARGETS, add_lora, apply_adapters, remove_lora, save_adapter_folder
from finetune.adapters.lora import lora_layers
from sampling.devices import resolve_device
from sampling.loading import ModelPair, load_models
from sampling.pipeline import TextToImage
from sampling.settings import SamplerSettings


def random_adapter(sm, out: Path, rank: int, seed: int, targets: tuple[str, ...] = DEFAULT_TARGETS) -> Path:
    generator = torch.Generator().manual_seed(seed)
    add_lora(sm.model, rank, targets=targets)
    with torch.no_grad():
        for _, layer in lora_layers(sm.model):
            for factor in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
                factor.copy_(torch.randn(factor.shape, generator=generator) * 0.01)
    folder = save_adapter_folder(sm.model, out, sm.model_id, {"bench": "random weights"})
    remove_lora(sm.model)
    return folder


def cpu_seconds_per_image(pipe: TextToImage, batch: int) -> float:
    """Process CPU time of one batch (on a shared CPU, wall time mostly measures the neighbours)."""
    prompts = [f"a red boat number {i}" for i in range(batch)]
    start = time.process_time()
    pipe.generate(prompts, list(range(batch)), batch_size=batch, progress=False)
    return (time.process_time() - start) / batch


def measure(sm, pipe, setups: dict, batch: int, repeats: int) -> dict[str, float]:
    """Best CPU seconds per image of each setup, the setups taking turns so that drift hits them alike."""
    best = dict.fromkeys(setups, float("inf"))
    for _ in range(repeats + 1):  # the first round warms up
        for label, (adapters, fuse) in setups.items():
            apply_adapters(sm.model, adapters, base_model_id=sm.model_id, fuse=fuse)
            best[label] = min(best[label], cpu_seconds_per_image(pipe, batch))
    apply_adapters(sm.model, [], base_model_id=sm.model_id)
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="base model folder or name (default: bundled)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument(
        "--steps", type=int, default=10, help="sampler steps (the overhead ratio does not depend on it)"
    )
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="LoRA targets, comma-separated, or 'all' (what `adapter teach` wraps; default: the trainer's)",
    )
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per figure; the fastest is kept")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    targets = tuple(KNOWN_TARGETS) if args.targets == "all" else tuple(args.targets.split(","))
    device = resolve_device(args.device)
    sm = load_models(args.model, device, use_upsampler=False).base
    pipe = TextToImage(ModelPair(sm, None), device, torch.float32, base=SamplerSettings(steps=args.steps))
    figures: dict = {"model": sm.model_id, "rank": args.rank, "targets": list(targets), "rows": []}
    figures["threads"] = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        one = random_adapter(sm, Path(tmp) / "one", args.rank, seed=1, targets=targets)
        two = random_adapter(sm, Path(tmp) / "two", args.rank, seed=2, targets=targets)
        figures["adapter_bytes"] = (one / "adapter.safetensors").stat().st_size
        setups = {  # label: (adapters, fused into the weights as the sampling commands apply them)
            "no adapter": ([], True),
            "1 adapter": ([(one, 1.0)], True),
            "2 adapters mixed": ([(one, 0.7), (two, 0.5)], True),
            "1 adapter unfused": ([(one, 1.0)], False),  # separate low-rank layers (training, side-by-side grids)
        }
        for batch in (int(b) for b in args.batches.split(",")):
            for label, seconds in measure(sm, pipe, setups, batch, args.repeats).items():
                figures["rows"].append({"setup": label, "batch": batch, "seconds_per_image": round(seconds, 4)})
    print(
        f"{sm.model_id}, rank {args.rank}, targets {args.targets}, {args.steps} steps, "
        f"adapter file {figures['adapter_bytes'] / 1024:.0f} KiB"
    )
    print(f"{'setup':<20} {'batch':>5} {'CPU s/image':>12} {'vs none':>8}")
    for row in figures["rows"]:
        none = next(r for r in figures["rows"] if r["batch"] == row["batch"] and r["setup"] == "no adapter")
        ratio = row["seconds_per_image"] / none["seconds_per_image"] - 1
        print(f"{row['setup']:<20} {row['batch']:>5} {row['seconds_per_image']:>12.4f} {ratio:>+8.1%}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
