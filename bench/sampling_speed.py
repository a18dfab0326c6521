"""Sampling speed: seconds per image for each sampler at its default steps (batch 1 and 8, with
classifier-free guidance), and seconds per 4-panel comic page with and without the upsampler.

    python bench/sampling_speed.py                       # tiny random 64px base (+ 64->256 upsampler), CPU
    python bench/sampling_speed.py --model PIPELINE_DIR  # a real model or pipeline folder
    python bench/sampling_speed.py --device cuda

Random weights sample exactly as fast as trained ones, so the default needs no download.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from finetune.diffusion.samplers import DEFAULT_STEPS, SAMPLERS
from sampling.comic.book import make_comic
from sampling.comic.page import PageStyle
from sampling.comic.script import parse_script
from sampling.devices import resolve_device
from sampling.loading import ModelPair, load_models
from sampling.pipeline import TextToImage
from sampling.settings import UPSAMPLER_DEFAULTS, SamplerSettings

PAGE_SCRIPT = {
    "title": "Bench",
    "layout": "2x2",
    "panels": [
        {
            "caption": "a lighthouse at dawn",
            "narration": "It was morning.",
            "dialogue": [{"speaker": "Elias", "text": "A calm day."}],
        },
        {"caption": "a storm over the sea", "dialogue": [{"speaker": "Elias", "text": "Clouds...", "kind": "thought"}]},
        {"caption": "a lantern in a stone room"},
        {
            "caption": "a small boat in big waves",
            "dialogue": [{"speaker": "Elias", "text": "Over here!", "kind": "shout"}],
        },
    ],
}


def tiny_pipeline_folder(root: Path) -> Path:
    """A random 64px base and 64->256 upsampler (tiny widths, CLIP tokenizer) saved as a pipeline folder."""
    from finetune.model import build_model, get_preset
    from finetune.model_folder import save_model_folder
    from finetune.tokenizers import get_tokenizer

    base = {**get_preset("tiny-base"), "image_size": 64, "channel_mult": "1,2,2,2", "attention_resolutions": "16,8"}
    upsampler = {
        **get_preset("tiny-upsample"),
        "image_size": 256,
        "channel_mult": "1,1,2,2,2,2",
        "attention_resolutions": "16",
    }
    torch.manual_seed(0)
    for role, options in (("base", base), ("upsampler", upsampler)):
        save_model_folder(
            root / role, build_model(options), options, get_tokenizer(options["tokenizer"], options["text_ctx"])
        )
    return root


def seconds_per_image(pipe: TextToImage, batch: int, repeats: int) -> float:
    prompts = [f"a red boat number {i}" for i in range(batch)]
    pipe.generate(prompts[:1], [0], batch_size=1, progress=False)  # warm-up
    best = float("inf")
    for r in range(repeats):
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        pipe.generate(prompts, list(range(r, r + batch)), batch_size=batch, progress=False)
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best / batch


def seconds_per_page(pipe: TextToImage, repeats: int) -> float:
    script = parse_script(PAGE_SCRIPT, "bench")
    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            make_comic(script, pipe, out, batch_size=4, style=PageStyle(), progress=False, report=lambda _: None)
            best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or pipeline folder (default: tiny random 64px models)")
    parser.add_argument(
        "--upsampler", help="upsampler model folder for the page benchmark (a pipeline folder brings its own)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--batches", default="1,8", help="batch sizes for the per-image figures (default: 1,8)")
    parser.add_argument(
        "--samplers", default=",".join(SAMPLERS), help=f"samplers to time (default: {','.join(SAMPLERS)})"
    )
    parser.add_argument("--guidance", type=float, default=3.0, help="guidance scale (default 3; 1 = one pass per step)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per figure; the fastest is kept (default: 1)")
    parser.add_argument("--skip-pages", action="store_true", help="only the per-image figures")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from sampling.devices import resolve_dtype

    dtype = resolve_dtype(args.precision, device)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(tiny_pipeline_folder(Path(tmp)))
        models = load_models(model, device, upsampler=args.upsampler)
        base_only = ModelPair(models.base, None)
        size = models.base.image_size
        figures = {
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "precision": args.precision,
            "model": models.base.model_id,
            "image_size": size,
            "guidance": args.guidance,
            "per_image": [],
            "per_page": [],
        }
        print(
            f"device {figures['device']}, {figures['threads']} threads, {args.precision}; base {models.base.model_id} "
            f"({size}px, {sum(p.numel() for p in models.base.model.parameters()) / 1e6:.1f}M parameters)"
        )
        print(f"{'sampler':<10} {'steps':>7} {'batch':>6} {'s/image':>9}")
        for sampler in args.samplers.split(","):
            settings = SamplerSettings(sampler=sampler, guidance=args.guidance)
            pipe = TextToImage(base_only, device, dtype, base=settings)
            for batch in (int(b) for b in args.batches.split(",")):
                s = seconds_per_image(pipe, batch, args.repeats)
                figures["per_image"].append(
                    {
                        "sampler": sampler,
                        "steps": DEFAULT_STEPS[sampler],
                        "batch": batch,
                        "seconds_per_image": round(s, 4),
                    }
                )
                print(f"{sampler:<10} {str(DEFAULT_STEPS[sampler]):>7} {batch:>6} {s:>9.3f}")
        if not args.skip_pages:
            print(
                f"4-panel page (base {SamplerSettings().resolved().sampler} "
                f"{SamplerSettings().resolved().steps} steps, "
                f"batch 4; upsampler {UPSAMPLER_DEFAULTS.sampler} {UPSAMPLER_DEFAULTS.steps}):"
            )
            variants = [("without upsampler", base_only)]
            if models.upsampler is not None:
                variants.append((f"with upsampler ({models.upsampler.image_size}px)", models))
            for label, pair in variants:
                s = seconds_per_page(
                    TextToImage(pair, device, dtype, base=SamplerSettings(guidance=args.guidance)), args.repeats
                )
                figures["per_page"].append({"variant": label, "seconds_per_page": round(s, 3)})
                print(f"  {label:<32} {s:8.2f} s/page")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
