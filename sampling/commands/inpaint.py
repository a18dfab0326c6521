"""`python -m sampling inpaint`: fill the masked region of an image from a caption (GLIDE's method)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..inpaint import load_inpaint_inputs
from ..outputs import output_state, save_image, slugify
from ..shapes import output_shape, shape_for_aspect
from .common import CommandError, add_model_arguments, add_output_arguments, add_sampler_arguments, build_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prompt", nargs="?", default="", help="caption of the whole picture (default: empty, unconditional)"
    )
    parser.add_argument(
        "--image",
        type=Path,
        required=True,
        help="the picture to edit; a non-square one keeps its aspect (sampled at the nearest shape the model can make)",
    )
    parser.add_argument(
        "--mask",
        type=Path,
        required=True,
        help="same size as the image: white = region to fill, black = pixels to keep",
    )
    parser.add_argument("-n", "--num-images", type=int, default=1, help="variations to make (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first variation; variation i gets seed+i")
    add_model_arguments(parser)
    add_sampler_arguments(parser)
    add_output_arguments(parser, "outputs")


def run(args: argparse.Namespace) -> int:
    inpaint_images(args)
    return 0


def inpaint_images(args: argparse.Namespace) -> list[Path]:
    """Every variation the arguments ask for, reusing the ones already written with the same parameters."""
    if args.num_images < 1:
        raise CommandError(f"--num-images must be at least 1, got {args.num_images}")
    if args.seed < 0:
        raise CommandError(f"--seed must not be negative, got {args.seed}")
    inputs = load_inpaint_inputs(args.image, args.mask)
    for warning in inputs.warnings:
        print(f"warning: {warning}")
    pipeline = build_pipeline(args)
    base, up = pipeline.models.base, pipeline.models.upsampler
    if not base.is_inpainting:
        raise CommandError(
            f"inpainting needs an inpainting base model (options inpaint: true, e.g. preset "
            f"glide-base-inpaint); {base.source} is not one"
        )
    # the image's own aspect: the base draws at the nearest shape it can make, the upsampler scales both sides
    shape = shape_for_aspect(pipeline.models, inputs.image.width / inputs.image.height)
    known = (inputs.at(shape), inputs.at(output_shape(pipeline.models, shape)) if up is not None else None)
    out = Path(args.out)
    seeds = [args.seed + i for i in range(args.num_images)]
    paths = [out / f"inpaint-{i:04d}-{slugify(args.prompt)}-s{seed}.png" for i, seed in enumerate(seeds)]
    params = [
        {
            **pipeline.parameters(args.prompt, seed, shape, inpainting=True),
            "mode": "inpaint",
            "source": inputs.digest,
            "upsampler_inpaints": bool(up is not None and up.is_inpainting),
        }
        for seed in seeds
    ]
    states = [output_state(p, prm) for p, prm in zip(paths, params)]
    if "different" in states and not args.overwrite:
        raise CommandError(f"outputs in {out} were made with other settings; pass --overwrite or choose another --out")
    todo = [i for i, s in enumerate(states) if s != "same"]
    print(f"{len(seeds)} variation(s): {len(todo)} to generate, {len(seeds) - len(todo)} already written, in {out}")
    done = 0
    for batch in pipeline.generate_batches(
        [args.prompt] * len(todo),
        [seeds[i] for i in todo],
        args.batch_size,
        known=known,
        progress=not args.quiet,
        shape=shape,
    ):
        for result in batch:
            i = todo[done]
            done += 1
            save_image(paths[i], result.image, params[i], {"image": str(args.image), "mask": str(args.mask)})
            for warning in result.warnings:
                print(f"warning: {warning}")
    print(f"done: {done} written, {len(seeds) - done} skipped")
    return paths
