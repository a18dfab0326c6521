"""Arguments shared by the sampling commands (models, device, samplers, outputs) and the code that
turns them into a ready `TextToImage` pipeline."""

from __future__ import annotations

import argparse
import logging

from data_pipeline.errors import UserError
from finetune.adapters.specs import adapter_spec_argument
from finetune.diffusion.samplers import DEFAULT_STEPS, SAMPLERS

from ..devices import resolve_device, resolve_dtype
from ..loading import load_models
from ..pipeline import TextToImage
from ..settings import BASE_DEFAULTS, PARTWAY_SAMPLERS, UPSAMPLER_DEFAULTS, SamplerSettings

SAMPLER_CHOICES = SAMPLERS
_UPSAMPLE_GUIDANCE_TEXT = (
    "no guidance, as OpenAI's example" if UPSAMPLER_DEFAULTS.guidance is None else f"{UPSAMPLER_DEFAULTS.guidance:g}"
)
_DEFAULT_STEPS_TEXT = ", ".join(f"{name} {steps}" for name, steps in DEFAULT_STEPS.items())


class CommandError(UserError):
    """A user-facing error: printed without a traceback, exit status 2."""


def _steps(text: str) -> str | int:
    return int(text) if text.strip().isdigit() else text.strip()


def add_model_arguments(parser: argparse.ArgumentParser, upsampler: bool = True) -> None:
    g = parser.add_argument_group("models")
    g.add_argument(
        "--model",
        default=None,
        help="a name (glide = OpenAI's GLIDE base + upsampler, glide-inpaint, glide-base, ..., bundled; "
        "released models are fetched into the cache on first use), a model folder, a pipeline folder "
        "(base/ + upsampler/) or an OpenAI .pt file; default: the bundled models",
    )
    g.add_argument(
        "--preset",
        default=None,
        help="model preset of an OpenAI .pt base checkpoint (default glide-base; e.g. glide-base-inpaint)",
    )
    g.add_argument(
        "--vocab-path",
        "--vocab",
        dest="vocab",
        default=None,
        metavar="DIR",
        help="GPT-2 BPE folder for OpenAI .pt checkpoints (default: the one shipped with the package)",
    )
    g.add_argument("--no-ema", action="store_true", help="use the raw weights even when a model folder has EMA weights")
    g.add_argument(
        "--adapter",
        action="append",
        default=[],
        type=adapter_spec_argument,
        metavar="PATH[:SCALE]",
        help="a LoRA adapter folder to apply, with its scale (default 1; 0.5 = half of it); repeatable, the "
        "adapters add up. An adapter applies only to the model it was trained on (its folder names that model): "
        "the base model, or the upsampler if it was trained on that one",
    )
    if upsampler:
        g.add_argument(
            "--upsampler",
            default=None,
            help="upsampler name (glide-upsample, ...), model folder or OpenAI .pt file (overrides a pipeline's)",
        )
        g.add_argument(
            "--upsampler-preset", default=None, help="model preset of an OpenAI .pt upsampler (default glide-upsample)"
        )
        g.add_argument("--no-upsample", action="store_true", help="stop at the base model's resolution")
    g = parser.add_argument_group("device")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    g.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16"),
        help="fp32, or bf16/fp16 autocast for the model (default: fp32)",
    )


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sampling")
    g.add_argument(
        "--sampler",
        default=BASE_DEFAULTS.sampler,
        choices=SAMPLER_CHOICES,
        help=f"base sampler (default: {BASE_DEFAULTS.sampler})",
    )
    g.add_argument(
        "--steps",
        type=_steps,
        default=None,
        help="ancestral/ddim: respacing spec ('100' GLIDE's default, '50', 'fast27', 'ddim25', '10,10,3,2,2'); "
        f"dpmpp_2m(_sde): number of steps (default: {_DEFAULT_STEPS_TEXT})",
    )
    g.add_argument(
        "--guidance",
        type=float,
        default=BASE_DEFAULTS.guidance,
        help=f"classifier-free guidance scale (default: {BASE_DEFAULTS.guidance}; 1 = no guidance)",
    )
    g.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default: 0, deterministic)")
    g.add_argument(
        "--no-placement",
        dest="placement",
        action="store_false",
        help="do not move a subject to the position its caption names ('in the top left', 'in the center'), nor "
        "guide each of two subjects by its own caption in its half ('a cat in the top left and a robot in the bottom "
        "right'); default: both, see sampling/placement.py and sampling/regions.py",
    )
    g.add_argument(
        "--upsample-sampler",
        default=UPSAMPLER_DEFAULTS.sampler,
        choices=SAMPLER_CHOICES,
        help=f"upsampler sampler (default: {UPSAMPLER_DEFAULTS.sampler})",
    )
    g.add_argument(
        "--upsample-steps",
        type=_steps,
        default=UPSAMPLER_DEFAULTS.steps,
        help=f"upsampler steps (default: {UPSAMPLER_DEFAULTS.steps})",
    )
    g.add_argument(
        "--upsample-guidance",
        type=float,
        default=UPSAMPLER_DEFAULTS.guidance,
        help=f"guide the upsampler too with this scale (default: {_UPSAMPLE_GUIDANCE_TEXT})",
    )
    g.add_argument(
        "--upsample-temperature",
        type=float,
        default=UPSAMPLER_DEFAULTS.temperature,
        help=f"scale of the upsampler's starting noise (default: {UPSAMPLER_DEFAULTS.temperature})",
    )
    g.add_argument(
        "--upsample-start",
        type=int,
        default=None,
        metavar="T",
        help="start the upsampler at timestep T from its noised low-res input (ancestral/ddim; default: "
        f"{UPSAMPLER_DEFAULTS.start_step}; 0 = from pure noise, as OpenAI's example and the "
        "only choice for dpmpp_2m(_sde))",
    )
    g.add_argument("--batch-size", type=int, default=4, help="images sampled together (default: 4)")


def add_output_arguments(parser: argparse.ArgumentParser, default_out: str | None) -> None:
    g = parser.add_argument_group("outputs")
    g.add_argument("--out", default=default_out, help=f"output folder (default: {default_out or 'see above'})")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="regenerate outputs that exist with other parameters (default: stop and say which)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def sampler_settings(args: argparse.Namespace) -> tuple[SamplerSettings, SamplerSettings]:
    base = SamplerSettings(
        sampler=args.sampler, steps=args.steps, guidance=args.guidance, eta=args.eta, placement=args.placement
    )
    start = args.upsample_start
    if start is None:
        start = UPSAMPLER_DEFAULTS.start_step if args.upsample_sampler in PARTWAY_SAMPLERS else 0
    up = SamplerSettings(
        sampler=args.upsample_sampler,
        steps=args.upsample_steps,
        guidance=args.upsample_guidance,
        temperature=args.upsample_temperature,
        start_step=start,
    )
    return base, up


def build_pipeline(args: argparse.Namespace) -> TextToImage:
    """Load the models named by the arguments and check the sampler settings against them."""
    if getattr(args, "batch_size", 1) < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.precision, device)
    base, up = sampler_settings(args)
    models = load_models(
        args.model,
        device,
        upsampler=getattr(args, "upsampler", None),
        use_upsampler=not getattr(args, "no_upsample", False),
        preset=args.preset,
        upsampler_preset=getattr(args, "upsampler_preset", None),
        vocab=args.vocab,
        use_ema=not args.no_ema,
    )
    logging.getLogger(__name__).info(
        "models: %s", models.base.model_id + (f" + {models.upsampler.model_id}" if models.upsampler else "")
    )
    pipeline = TextToImage(models, device, dtype, base, up)
    if getattr(args, "adapter", None):
        pipeline.set_adapters(args.adapter)
        for adapter in pipeline.adapters:
            print(f"adapter {adapter['path']} (scale {adapter['scale']:g}) on the {adapter['model']} model")
    return pipeline
