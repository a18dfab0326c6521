"""`python -m sampling generate`: images from captions, each PNG carrying its generation parameters."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image

from ..outputs import make_grid, output_state, save_image, slugify
from .common import CommandError, add_model_arguments, add_output_arguments, add_sampler_arguments, build_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompts", nargs="*", help='captions; an empty string "" samples unconditionally')
    parser.add_argument(
        "--prompts-file", type=Path, help="a UTF-8 text file with one caption per line (blank lines skipped)"
    )
    parser.add_argument("-n", "--num-images", type=int, default=1, help="images per caption (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image; image i gets seed+i (default: 0)")
    parser.add_argument("--grid", action="store_true", help="also write grid.png with every image of the run")
    add_model_arguments(parser)
    add_sampler_arguments(parser)
    add_output_arguments(parser, "outputs")


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompts)
    if args.prompts_file:
        try:
            text = args.prompts_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read --prompts-file {args.prompts_file}: {exc}") from None
        prompts += [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise CommandError('give at least one caption (or --prompts-file); use "" for an unconditional sample')
    return prompts


def run(args: argparse.Namespace) -> int:
    generate_images(args)
    return 0


def generate_images(args: argparse.Namespace) -> list[Path]:
    """Every image the arguments ask for, reusing the ones already written with the same parameters."""
    prompts = read_prompts(args)
    if args.num_images < 1:
        raise CommandError(f"--num-images must be at least 1, got {args.num_images}")
    if args.seed < 0:
        raise CommandError(f"--seed must not be negative, got {args.seed}")
    pipeline = build_pipeline(args)
    out = Path(args.out)
    jobs = [(p, args.seed + i) for i, p in enumerate(q for q in prompts for _ in range(args.num_images))]
    paths = [out / f"{i:04d}-{slugify(p)}-s{seed}.png" for i, (p, seed) in enumerate(jobs)]
    params = [pipeline.parameters(p, seed) for p, seed in jobs]
    states = [output_state(path, prm) for path, prm in zip(paths, params)]
    conflicts = [path.name for path, state in zip(paths, states) if state == "different"]
    if conflicts and not args.overwrite:
        raise CommandError(
            f"{len(conflicts)} output(s) in {out} were made with other settings (e.g. {conflicts[0]}); "
            "pass --overwrite to replace them or choose another --out"
        )
    todo = [i for i, state in enumerate(states) if state != "same"]
    print(f"{len(jobs)} image(s): {len(todo)} to generate, {len(jobs) - len(todo)} already written, in {out}")
    done = 0
    started = time.perf_counter()
    for batch in pipeline.generate_batches(
        [jobs[i][0] for i in todo], [jobs[i][1] for i in todo], batch_size=args.batch_size, progress=not args.quiet
    ):
        elapsed = (time.perf_counter() - started) / len(batch)
        for result in batch:
            i = todo[done]
            done += 1
            save_image(paths[i], result.image, params[i], {"seconds": round(elapsed, 3), "truncated": result.truncated})
            for warning in result.warnings:
                print(f"warning: {warning}")
        started = time.perf_counter()
    grid_params = {"kind": "grid", "images": [p.name for p in paths], "model": pipeline.model_id}
    if pipeline.adapters:
        grid_params["adapters"] = pipeline.adapters
    if args.grid and (done or output_state(out / "grid.png", grid_params) != "same"):
        images = []
        for path in paths:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        save_image(out / "grid.png", make_grid(images), grid_params)
    print(f"done: {done} written, {len(jobs) - done} skipped")
    return paths
