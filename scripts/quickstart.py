#!/usr/bin/env python
"""The whole pipeline on a CPU in minutes: dataset -> fine-tune -> comic page, before and after.

    python scripts/quickstart.py [--out runs/quickstart]

1. builds a small comic-style synthetic dataset   (python -m data_pipeline synthetic --style comic)
2. fine-tunes the bundled base model on it          (python -m finetune train --init <bundled base>)
3. draws the example comic page with both models    (python -m sampling comic shapes_story)
4. generates evaluation images with both models     (python -m sampling generate) and scores them with the
   synthetic world's evaluator: caption accuracy (shape, colour and background all right), position, and
   the share of images the style detector reads as comic. Few images, so the figures are small-sample.

Each step is printed as the command that does it, run in this process. Every step resumes: a rerun
with the same --out reuses finished outputs. The figures also go to OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

from data_pipeline.fsutil import atomic_write_json

# `synthetic` world flags the quickstart passes through; by default it uses the world recorded in the
# base model's provenance.json (the world the model was trained on).
WORLD_OPTIONS = ("shapes", "colors", "backgrounds", "positions", "shape_sizes")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python scripts/quickstart.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/quickstart", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: torch's choice; on a machine busy with other jobs 1 is "
        "often several times faster)",
    )
    g = parser.add_argument_group("models (default: the bundled models)")
    g.add_argument("--base-model", help="base model folder to fine-tune and compare with")
    g.add_argument("--upsampler", help="upsampler model folder for the comic pages")
    g.add_argument("--no-upsample", action="store_true", help="comic pages at the base resolution (faster)")
    g = parser.add_argument_group("dataset")
    g.add_argument("--count", type=int, default=2000, help="comic-style images to build (default: %(default)s)")
    g.add_argument("--seed", type=int, default=7, help="dataset seed (default: %(default)s)")
    for name in WORLD_OPTIONS:
        g.add_argument(
            "--" + name.replace("_", "-"),
            help=f"world {name.replace('_', ' ')} (count or names; default: the base model's world)",
        )
    g = parser.add_argument_group("fine-tuning")
    g.add_argument("--steps", type=int, default=300, help="optimizer steps (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=8, help="samples per step (default: %(default)s)")
    g.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default: %(default)s)")
    g.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast while fine-tuning: faster on GPUs and on CPUs with AMX or AVX512-BF16, "
        "much slower on other CPUs",
    )
    g = parser.add_argument_group("sampling and evaluation")
    g.add_argument(
        "--eval-samples",
        type=int,
        default=48,
        help="evaluation images per model, each a different scene (default: %(default)s)",
    )
    g.add_argument(
        "--sample-steps",
        type=int,
        default=30,
        help="DPM-Solver++ (2M SDE) steps of the base model, pages and evaluation (default: %(default)s)",
    )
    g.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default: %(default)s)")
    g.add_argument(
        "--script", default="shapes_story", help="comic script: a file or a bundled example name (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    for name in ("count", "steps", "batch_size", "eval_samples", "sample_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.threads < 0:
        parser.error(f"--threads must not be negative, got {args.threads}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    return args


def heading(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


def run_command(module: str, argv: list[str]) -> None:
    """Print `python -m module argv...` and run that CLI's main() in this process; stop on failure."""
    print(f"\n$ python -m {module} {shlex.join(argv)}", flush=True)
    if module == "data_pipeline":
        from data_pipeline.__main__ import main
    elif module == "finetune":
        from finetune.__main__ import main
    else:
        from sampling.__main__ import main
    status = main(argv)
    if status:
        raise SystemExit(f"quickstart: `python -m {module} {argv[0]}` failed (exit status {status}); see above")


def model_options(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))["options"]


def resolve_models(args: argparse.Namespace) -> tuple[Path, Path | None]:
    from finetune.bundled import bundled_model_path

    try:
        base = Path(args.base_model) if args.base_model else bundled_model_path("base")
        upsampler = None
        if not args.no_upsample:
            upsampler = Path(args.upsampler) if args.upsampler else bundled_model_path("upsampler")
    except FileNotFoundError as exc:
        raise SystemExit(f"quickstart: {exc}") from None
    for path in (base, upsampler):
        if path is not None and not (path / "config.json").is_file():
            raise SystemExit(f"quickstart: {path} is not a model folder (no config.json)")
    if model_options(base).get("super_res"):
        raise SystemExit(f"quickstart: {base} is an upsampler; --base-model needs a base model")
    return base, upsampler


def world_arguments(args: argparse.Namespace, base: Path) -> list[str]:
    """`synthetic` world flags: the user's, else the world recorded in the base model's provenance."""
    given = {name: getattr(args, name) for name in WORLD_OPTIONS if getattr(args, name)}
    if not given:
        provenance = base / "provenance.json"
        world = json.loads(provenance.read_text(encoding="utf-8")).get("world") if provenance.is_file() else None
        if isinstance(world, dict):
            given = {
                "shapes": world.get("shapes"),
                "colors": world.get("colors"),
                "backgrounds": world.get("backgrounds"),
                "positions": world.get("positions"),
                "shape_sizes": world.get("sizes"),
            }
            given = {k: ",".join(v) for k, v in given.items() if v}
    flags = []
    for name, value in given.items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def evaluation_scenes(world, n: int, seed: int = 1000) -> list[dict]:
    """n scenes of the world; the evaluation prompts are their canonical captions."""
    from data_pipeline.synthetic import sample_attributes, sample_rng

    return [sample_attributes(world, sample_rng(seed, i)) for i in range(n)]


def generated_images(folder: Path, n: int) -> list[Path]:
    """The images `sampling generate` wrote for prompts 0..n-1 (files are named NNNN-<caption>-s<seed>.png)."""
    paths = []
    for i in range(n):
        found = sorted(folder.glob(f"{i:04d}-*.png"))
        if len(found) != 1:
            raise SystemExit(f"quickstart: expected one image {i:04d}-*.png in {folder}, found {len(found)}")
        paths.append(found[0])
    return paths


def interval(p: float, n: int) -> float:
    """Half-width of a 95% normal-approximation interval of a rate p measured on n images."""
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n) * 100


def format_figures(rows: dict[str, dict]) -> str:
    columns = (
        ("all_three", "all three"),
        ("shape", "shape"),
        ("color", "colour"),
        ("background", "background"),
        ("position", "position"),
        ("style_rate", "comic style"),
    )
    n = next(iter(rows.values()))["n"]
    worst = max(interval(r[key], r["n"]) for r in rows.values() for key, _ in columns)
    lines = [
        f"SMALL-SAMPLE figures: {n} images per model, so each rate is uncertain by up to ±{worst:.0f} points "
        "(95%); differences smaller than that mean nothing. `bench/` has the real benchmark.",
        f"{'':<12}" + "".join(f"{title:>13}" for _, title in columns),
    ]
    for name, figures in rows.items():
        lines.append(f"{name:<12}" + "".join(f"{100 * figures[key]:>12.0f}%" for key, _ in columns))
    return "\n".join(lines)


def panel_readouts(page_dir: Path, world) -> list[str]:
    """What the evaluator reads in each panel of a comic run (comic.json lists the panels and prompts)."""
    from data_pipeline.synthetic import read_scene

    meta = json.loads((page_dir / "comic.json").read_text(encoding="utf-8"))
    lines = []
    for panel in meta["panels"]:
        r = {
            k: str(v).replace("_", " ") if v is not None else "?"
            for k, v in read_scene(page_dir / panel["file"], world).items()
        }
        lines.append(
            f"  {panel['page']}.{panel['panel']} {panel['caption']!r}\n"
            f"      reads as: {r['size']} {r['color']} {r['shape']} {r['position']} on {r['background']}, "
            f"{r['style']} style"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from data_pipeline.synthetic import score, world_from_manifest

    out = Path(args.out)
    base, upsampler = resolve_models(args)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    size = int(model_options(base)["image_size"])
    timings: dict[str, float] = {}
    data_dir, run_dir = out / "data", out / "finetune"

    started = time.perf_counter()
    print(f"quickstart: base model {base}" + (f", upsampler {upsampler}" if upsampler else ", no upsampler"))
    heading("1/4 a small comic-style synthetic dataset")
    run_command(
        "data_pipeline",
        [
            "synthetic",
            "--out",
            str(data_dir),
            "--count",
            str(args.count),
            "--seed",
            str(args.seed),
            "--style",
            "comic",
            "--sizes",
            str(size),
            "--shard-size",
            "500",
            "--processes",
            "1",
            *world_arguments(args, base),
        ],
    )
    timings["dataset"] = time.perf_counter() - started
    world = world_from_manifest(str(data_dir))

    heading(f"2/4 fine-tune the base model for {args.steps} steps")
    started = time.perf_counter()
    finetuned = run_dir / "model"
    done_steps = 0
    if (finetuned / "provenance.json").is_file():
        provenance = json.loads((finetuned / "provenance.json").read_text(encoding="utf-8"))
        if provenance.get("init_checkpoint") not in (str(base), "(resumed run)"):
            raise SystemExit(
                f"quickstart: {run_dir} fine-tuned another model ({provenance.get('init_checkpoint')}); "
                "use another --out"
            )
        done_steps = int(provenance.get("steps", 0))
    if done_steps < args.steps:
        from finetune.train.checkpointing import list_checkpoints

        resume = ["--resume", "latest"] if list_checkpoints(run_dir) else []
        run_command(
            "finetune",
            [
                "train",
                "--init",
                str(base),
                "--data",
                str(data_dir),
                "--run-dir",
                str(run_dir),
                *resume,
                "--max-steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
                "--lr",
                str(args.lr),
                "--lr-warmup-steps",
                str(min(20, args.steps // 10)),
                "--ema-decay",
                "0.995",
                "--mixed-precision",
                "bf16" if args.bf16 else "no",
                # position and size are in the captions: no random crops
                "--crop-scale-min",
                "1",
                "--crop-scale-max",
                "1",
                "--num-workers",
                "0",
                "--shuffle-buffer",
                "500",
                "--val-samples",
                "0",
                "--sample-every",
                "-1",
                "--checkpoint-every",
                str(max(50, args.steps // 3)),
                "--keep-checkpoints",
                "1",
                "--no-progress",
            ],
        )
    else:
        print(f"\nfine-tuned model in {finetuned} already has {done_steps} steps; reusing it")
    timings["fine-tune"] = time.perf_counter() - started

    sampler = ["--sampler", "dpmpp_2m_sde", "--steps", str(args.sample_steps), "--guidance", str(args.guidance)]
    models = {"before": base, "after": finetuned}
    up_flags = ["--upsampler", str(upsampler)] if upsampler else ["--no-upsample"]
    heading("3/4 the same comic page before and after fine-tuning (same seeds)")
    for name, model in models.items():
        started = time.perf_counter()
        run_command(
            "sampling",
            [
                "comic",
                args.script,
                "--model",
                str(model),
                *up_flags,
                *sampler,
                "--out",
                str(out / f"page-{name}"),
                "--overwrite",
                "--quiet",
            ],
        )
        timings[f"page {name}"] = time.perf_counter() - started

    scenes = evaluation_scenes(world, args.eval_samples)
    prompts = out / "eval-prompts.txt"
    from data_pipeline.synthetic import canonical_caption

    name_size = len(world.sizes) > 1
    prompts.write_text("".join(canonical_caption(s, name_size) + "\n" for s in scenes), encoding="utf-8")
    heading(f"4/4 {len(scenes)} evaluation images per model (same captions and seeds)")
    figures = {}
    for name, model in models.items():
        started = time.perf_counter()
        folder = out / f"eval-{name}"
        run_command(
            "sampling",
            [
                "generate",
                "--prompts-file",
                str(prompts),
                "--model",
                str(model),
                "--no-upsample",
                *sampler,
                "--seed",
                "0",
                "--batch-size",
                "8",
                "--out",
                str(folder),
                "--overwrite",
                "--quiet",
            ],
        )
        figures[name] = score(generated_images(folder, len(scenes)), scenes, world)
        timings[f"evaluation {name}"] = time.perf_counter() - started

    heading("the comic page, before and after fine-tuning")
    for name in models:
        print(f"{name}: {out / f'page-{name}' / 'page-01.png'}")
        print("\n".join(panel_readouts(out / f"page-{name}", world)))
    rows = {"before": figures["before"], "after": figures["after"]}
    heading(
        f"evaluator figures: {args.eval_samples} captions of the world, {size} px, "
        f"DPM-Solver++ {args.sample_steps} steps, guidance {args.guidance:g}"
    )
    print(format_figures(rows))
    print("\ntimings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    atomic_write_json(
        out / "summary.json",
        {
            "base_model": str(base),
            "upsampler": str(upsampler) if upsampler else None,
            "finetuned_model": str(finetuned),
            "dataset": str(data_dir),
            "steps": args.steps,
            "eval_samples": args.eval_samples,
            "sample_steps": args.sample_steps,
            "guidance": args.guidance,
            "figures": rows,
            "note": "small-sample figures",
            "seconds": {k: round(v, 1) for k, v in timings.items()},
            "pages": {name: str(out / f"page-{name}" / "page-01.png") for name in models},
        },
    )
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
