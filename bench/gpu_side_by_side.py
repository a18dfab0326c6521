"""Side by side: our model step and our real trainer loop against glide-finetune's code, at the same options,
the same (random, seeded) weights and the same batch, for the base model and the upsampler.

Four measurements per model, all in one process (bare steps interleaved ours/reference, medians reported):
  * bare step, ours: q_sample -> forward (autocast in bf16) -> eps MSE -> backward -> AdamW, no data loading;
  * bare step, reference: glide-finetune's `base_train_step` / `upsample_train_step` -> backward -> AdamW, with
    its bf16 mode (`convert_to_bf16`: bf16 weights) and its default (non-fused) AdamW;
  * trainer, ours: `finetune.train.train` (shards from `python -m data_pipeline synthetic`, hybrid loss, guards,
    EMA, logging) initialised from a model folder holding the same weights; samples/s from the run's own
    per-step records (metrics.jsonl timestamps) after the warm-up steps;
  * trainer, reference: glide-finetune's train step + its per-step loss/grad-norm `.item()` syncs, gradient
    clipping, AdamW and `SimpleEMA` fed by a DataLoader over in-memory batches (its epoch function needs wandb
    and draws samples at iteration 0, so it is driven step by step here), timed per step the same way.
Without `--reference` only our side runs. glide-finetune is never a dependency: check it out outside the repo,

    git clone https://github.com/afiaka87/glide-finetune /work/ref/glide-finetune   # has glide-text2im vendored
    (or put openai/glide-text2im beside it: /work/ref/glide-text2im)

The GPU run (one H200, fits one 10-minute command; ~6 min measured budget):

    python bench/gpu_side_by_side.py --size full --models base,upsample --precision bf16 \\
        --reference /work/ref/glide-finetune --steps 20 --warmup 5 --trainer-steps 40 --workers 8 \\
        --json $OUT/side_by_side.json

CPU, tiny size (what the test runs, our side only): `python bench/gpu_side_by_side.py --size tiny --steps 2`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `python -m finetune train` does

import torch  # noqa: E402
from bench_common import synthetic_shards  # noqa: E402

TINY_UNET = {
    "num_channels": 64,
    "num_res_blocks": 2,
    "channel_mult": "1,2,2,2",
    "attention_resolutions": "16,8",
    "xf_width": 256,
    "xf_layers": 4,
    "xf_heads": 4,
    "text_ctx": 32,
}
# model -> size -> (preset, overrides, batch)
CONFIGS = {
    "base": {"tiny": ("glide-base", {**TINY_UNET, "image_size": 64}, 8), "full": ("glide-base", {}, 64)},
    "upsample": {"tiny": ("glide-upsample", {**TINY_UNET, "image_size": 64}, 4), "full": ("glide-upsample", {}, 8)},
}
# the smallest presets, for the test that keeps this script working
CONFIGS["base"]["smoke"] = ("tiny-base", {}, 2)
CONFIGS["upsample"]["smoke"] = ("tiny-upsample", {}, 2)


def model_options(model: str, size: str) -> tuple[dict, int]:
    from finetune.model import get_preset

    preset, overrides, batch = CONFIGS[model][size]
    return {**get_preset(preset), **overrides, "dropout": 0.0}, batch


def device_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process-wide high-water mark on the CPU


def make_batch(options: dict, batch: int, seed: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """One training batch on the CPU: image in [-1, 1], tokens/mask, and low_res for the upsampler."""
    g = torch.Generator().manual_seed(seed)
    size, ctx = options["image_size"], options["text_ctx"]
    lengths = torch.randint(1, ctx + 1, (batch, 1), generator=g)
    out = {
        "image": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
        "tokens": torch.randint(0, vocab_size, (batch, ctx), generator=g),
        "mask": torch.arange(ctx)[None] < lengths,
    }
    if options["super_res"]:
        out["low_res"] = torch.rand(batch, 3, size // 4, size // 4, generator=g) * 2 - 1
    return out


# ---------------------------------------------------------------------------------------------- our side
def build_ours(options: dict, seed: int, device: torch.device):
    from finetune.model import build_model

    torch.manual_seed(seed)
    return build_model(options).to(device).train()


def our_bare_step(model, options: dict, batch: dict, precision: str, device: torch.device):
    """Returns step(): forward + eps MSE + backward + fused AdamW on `batch`, as bench/model_step.py does."""
    from finetune.diffusion import diffusion_from_options

    diffusion = diffusion_from_options(options, timestep_respacing="")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type in ("cpu", "cuda"))
    x0 = batch["image"].to(device)
    kwargs = {"tokens": batch["tokens"].to(device), "mask": batch["mask"].to(device)}
    if "low_res" in batch:
        kwargs["low_res"] = batch["low_res"].to(device)
    g = torch.Generator(device=device).manual_seed(1)

    def step():
        t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), device=device, generator=g)
        noise = torch.randn(x0.shape, device=device, generator=g)
        x_t = diffusion.q_sample(x0, t, noise)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x_t, t, **kwargs)
        loss = (out[:, :3].float() - noise).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def our_trainer(
    options: dict,
    model,
    batch_size: int,
    precision: str,
    steps: int,
    warmup: int,
    workers: int,
    channels_last: str,
    compile_model: bool,
    workdir: Path,
    device: torch.device,
    profile: bool = False,
) -> dict:
    """`finetune.train.train` on synthetic shards, initialised with `model`'s weights; figures from its records."""
    from finetune.model_folder import save_model_folder
    from finetune.tokenizers import get_tokenizer
    from finetune.train import build_config, read_metrics, train

    init = workdir / "init-model"
    if not init.exists():
        save_model_folder(init, model, options, get_tokenizer(options["tokenizer"], options["text_ctx"]))
    data = synthetic_shards(workdir, options["image_size"], max(64, batch_size * (steps + warmup + 2)))
    run_dir = workdir / f"run-{time.monotonic_ns()}"
    settings = {
        "run_dir": str(run_dir),
        "data": [str(data)],
        "init": str(init),
        "batch_size": batch_size,
        "mixed_precision": "bf16" if precision == "bf16" else "no",
        "max_steps": warmup + steps,
        "num_workers": workers,
        "val_samples": 0,
        "sample_every": -1,
        "checkpoint_every": -1,
        "export_model": False,
        "progress": False,
        "shuffle_buffer": 64,
        "channels_last": channels_last,
    }
    if compile_model:
        settings["compile"] = True
    config = build_config(settings)
    reset_peak(device)
    if profile:
        import cProfile
        import pstats

        with cProfile.Profile() as prof:
            train(config)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        train(config)
    times = [m["time"] for m in read_metrics(run_dir)]
    return {**per_step_rate(times, warmup, batch_size), "peak_mib": round(peak_mib(device))}


def per_step_rate(times: list[float], warmup: int, batch_size: int) -> dict:
    """samples/s from per-step end times: the median step after the warm-up (and the mean, for the record)."""
    first = max(warmup - 1, 0)  # gaps from the end of the last warm-up step
    gaps = [b - a for a, b in zip(times[first:], times[first + 1 :])]
    if not gaps:
        raise ValueError("too few steps to measure: raise --trainer-steps")
    median = statistics.median(gaps)
    return {
        "samples_per_s": round(batch_size / median, 3),
        "mean_samples_per_s": round(batch_size * len(gaps) / sum(gaps), 3),
        "steps_measured": len(gaps),
    }


# ---------------------------------------------------------------------------------------------- reference side
def import_reference(ref_dir: Path):
    """glide-finetune's training module and glide-text2im's model creation, from a checkout outside the repo."""
    for path in (ref_dir.parent / "glide-text2im", ref_dir / "glide-text2im", ref_dir):
        if path.is_dir():
            sys.path.insert(0, str(path))
    stub = sys.modules.setdefault("wandb", _WandbStub())  # imported at its module level, unused by the train step
    from glide_finetune import ema_util, glide_finetune

    if isinstance(stub, _WandbStub):
        del sys.modules["wandb"]  # accelerate probes for wandb: it must not find the stub
    from glide_text2im.model_creation import create_model_and_diffusion, model_and_diffusion_defaults

    return glide_finetune, ema_util, create_model_and_diffusion, model_and_diffusion_defaults


class _WandbStub(type(sys)):
    def __init__(self):
        super().__init__("wandb")


def build_reference(ref, options: dict, ours, precision: str, device: torch.device):
    _, _, create, defaults = ref
    known = defaults()
    theirs = {k: v for k, v in options.items() if k in known}
    theirs.update(use_fp16=False, timestep_respacing="")
    model, diffusion = create(**theirs)
    missing, unexpected = model.load_state_dict(ours.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"reference model differs: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.to(device).train()
    if precision == "bf16":
        model.convert_to_bf16()
    return model, diffusion


def reference_step_fn(ref, model, diffusion, options: dict):
    glide_finetune = ref[0]
    if options["super_res"]:
        return lambda b, device: glide_finetune.upsample_train_step(
            model, diffusion, (b["tokens"], b["mask"], b["low_res"], b["image"]), device
        )
    return lambda b, device: glide_finetune.base_train_step(
        model, diffusion, (b["tokens"], b["mask"], b["image"]), device
    )


def reference_bare_step(ref, model, diffusion, options: dict, batch: dict, device: torch.device):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    train_step = reference_step_fn(ref, model, diffusion, options)
    on_device = {k: v.to(device) for k, v in batch.items()}

    def step():
        train_step(on_device, str(device)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def reference_trainer(
    ref, model, diffusion, options: dict, batch_size: int, steps: int, warmup: int, workers: int, device: torch.device
) -> dict:
    """glide-finetune's per-step work (train step, loss .item(), clip + .item(), AdamW, SimpleEMA), timed per step."""
    ema_util = ref[1]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ema = ema_util.SimpleEMA(model, 0.9999)
    train_step = reference_step_fn(ref, model, diffusion, options)
    batches = [make_batch(options, batch_size, seed, model.token_embedding.num_embeddings) for seed in range(8)]
    loader = torch.utils.data.DataLoader(
        _Cycle(batches, warmup + steps), batch_size=None, num_workers=min(workers, 2), pin_memory=device.type == "cuda"
    )
    reset_peak(device)
    times = []
    for b in loader:
        loss = train_step(b, str(device))
        loss.backward()
        loss.detach().item()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0).item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update()
        times.append(time.time())
    return {**per_step_rate(times, warmup, batch_size), "peak_mib": round(peak_mib(device))}


class _Cycle(torch.utils.data.IterableDataset):
    def __init__(self, batches: list[dict], count: int):
        self.batches, self.count = batches, count

    def __iter__(self):
        for i in range(self.count):
            yield self.batches[i % len(self.batches)]


# ---------------------------------------------------------------------------------------------- driver
def time_interleaved(steps: dict, n: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step of each callable, timed in rounds A, B, A, B, ... after `warmup` calls each."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    device_sync(device)
    samples = {name: [] for name in steps}
    for _ in range(n):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            device_sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def bare_peaks(steps: dict, device: torch.device) -> dict[str, float]:
    peaks = {}
    for name, fn in steps.items():
        reset_peak(device)
        fn()
        device_sync(device)
        peaks[name] = round(peak_mib(device))
    return peaks


def run_model(name: str, args, device: torch.device, ref, workdir: Path) -> dict:
    options, batch_size = model_options(name, args.size)
    batch_size = args.batch or batch_size
    ours = build_ours(options, args.seed, device)
    batch = make_batch(options, batch_size, args.seed, ours.vocab_size)
    result = {
        "model": name,
        "size": args.size,
        "precision": args.precision,
        "reference_precision": args.reference_precision or args.precision,
        "batch": batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    steps = {"ours": our_bare_step(ours, options, batch, args.precision, device)}
    if ref is not None:
        theirs, diffusion = build_reference(ref, options, ours, args.reference_precision or args.precision, device)
        steps["reference"] = reference_bare_step(ref, theirs, diffusion, options, batch, device)
    seconds = time_interleaved(steps, args.steps, args.warmup, device)
    peaks = bare_peaks(steps, device)
    for side in steps:
        result[f"bare_{side}"] = {"samples_per_s": round(batch_size / seconds[side], 3), "peak_mib": peaks[side]}
    del steps
    if args.no_trainer:
        return with_ratios(result)
    fresh = build_ours(options, args.seed, device)  # the bare step trained `ours`: start the trainer from the seed
    result["trainer_ours"] = our_trainer(
        options,
        fresh,
        batch_size,
        args.precision,
        args.trainer_steps,
        args.warmup,
        args.workers,
        args.channels_last,
        args.compile,
        workdir,
        device,
        args.profile,
    )
    if ref is not None:
        theirs, diffusion = build_reference(ref, options, fresh, args.precision, device)
        result["trainer_reference"] = reference_trainer(
            ref, theirs, diffusion, options, batch_size, args.trainer_steps, args.warmup, args.workers, device
        )
    return with_ratios(result)


def with_ratios(result: dict) -> dict:
    def rate(key):
        return result[key]["samples_per_s"] if key in result else None

    pairs = {
        "trainer_over_bare_ours": ("trainer_ours", "bare_ours"),
        "bare_ours_over_reference": ("bare_ours", "bare_reference"),
        "trainer_ours_over_reference": ("trainer_ours", "trainer_reference"),
        "trainer_over_bare_reference": ("trainer_reference", "bare_reference"),
    }
    for name, (a, b) in pairs.items():
        if rate(a) is not None and rate(b) is not None:
            result[name] = round(rate(a) / rate(b), 3)
    return result


def print_result(r: dict) -> None:
    print(f"{r['model']} ({r['size']}, {r['precision']}, batch {r['batch']}, {r['device']}):")
    for key in ("bare_ours", "bare_reference", "trainer_ours", "trainer_reference"):
        if key in r:
            print(f"  {key:18s} {r[key]['samples_per_s']:10.2f} samples/s   peak {r[key]['peak_mib']:>7} MiB")
    for key in (
        "trainer_over_bare_ours",
        "bare_ours_over_reference",
        "trainer_ours_over_reference",
        "trainer_over_bare_reference",
    ):
        if key in r:
            print(f"  {key:30s} {r[key]:.3f}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="base,upsample", help="comma-separated: base, upsample")
    parser.add_argument("--size", default="full", choices=["smoke", "tiny", "full"])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=0, help="batch size (0 = the size's default)")
    parser.add_argument("--steps", type=int, default=10, help="timed bare steps per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before measuring")
    parser.add_argument("--trainer-steps", type=int, default=20, help="measured trainer steps")
    parser.add_argument("--workers", type=int, default=4, help="data-loading workers of the trainer")
    parser.add_argument("--channels-last", default="auto", choices=["auto", "yes", "no"])
    parser.add_argument("--compile", action="store_true", help="our trainer with --compile")
    parser.add_argument("--no-trainer", action="store_true", help="bare model steps only")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of our trainer run")
    parser.add_argument("--reference", help="a glide-finetune checkout (bench-only; never installed)")
    parser.add_argument(
        "--reference-precision",
        choices=["fp32", "bf16"],
        help="the reference's precision in the bare step (default: --precision)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ref = import_reference(Path(args.reference)) if args.reference else None
    results = []
    with tempfile.TemporaryDirectory(prefix="side_by_side_") as tmp:
        for name in args.models.split(","):
            results.append(run_model(name, args, device, ref, Path(tmp) / name))
            print_result(results[-1])
    if args.json:
        from data_pipeline.fsutil import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
