"""Generation quality on the CPU, measured with the synthetic world's evaluator (not part of CI).

Prompts are canonical captions of scenes drawn from the model's world; each generated image is read back by
`data_pipeline.synthetic.read_scene` and scored: caption accuracy = shape, colour and background all right
(position reported separately), and the background colour error is the median RGB distance between the image's
border and the palette colour of the true background. Image i always starts from the same noise (seed + i) in every
setting, so the settings are compared on paired seeds. Five parts:

  guidance   accuracy vs classifier-free guidance scale (0 = unconditional) with the fast solver;
  samplers   each sampler at a few step counts, at one guidance scale (the best of the sweep by default);
  finetune   style-detector rate and caption accuracy of the model before/after a fine-tune (--finetuned DIR),
             with a style phrase appended to the prompts;
  pipeline   what users see: base -> upsampler (the sampling pipeline's own code and upsampler settings, one row per
             --upsample-start), read at the pipeline's output size, beside the base alone on the same seeds;
  aspect     non-square scenes (--aspects, e.g. 1:1,2:1,1:2): the same prompts generated through the pipeline at
             shape_for_aspect's (height, width) and read back on their own canvas ("top left" is the canvas's
             top-left corner), base and final image.

Resumable: every chunk of images is cached under --results (per model digest and setting), so a rerun with more
--samples only generates the new images. Prints a table and writes quality.md, quality.json and quality.png.

    python bench/quality.py                              # bundled base, 500 samples per point
    python bench/quality.py --samples 64 --parts guidance
    python bench/quality.py --finetuned runs/quickstart/finetune/model --parts finetune
    python bench/quality.py --parts pipeline --samples 100 --upsample-start 500,0
    python bench/quality.py --parts aspect --samples 64 --sampler-guidance 5 --aspects 1:1,2:1,1:2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_pipeline.fsutil import atomic_write, atomic_write_text  # noqa: E402
from data_pipeline.synthetic import (  # noqa: E402
    DEFAULT_WORLD,
    PALETTE,
    World,
    canonical_caption,
    read_scene,
    sample_attributes,
    sample_rng,
    world_from_manifest,
)
from data_pipeline.synthetic.scoring import CONTENT_ATTRIBUTES  # noqa: E402
from finetune.bundled_models import bundled_model_path  # noqa: E402
from finetune.diffusion import defaults  # noqa: E402
from sampling.loading import ModelPair, load_sampling_model  # noqa: E402
from sampling.pipeline import TextToImage, run_stage  # noqa: E402
from sampling.settings import UPSAMPLER_DEFAULTS, SamplerSettings  # noqa: E402
from sampling.shapes import output_shape, shape_for_aspect  # noqa: E402

READ_KEYS = ("shape", "color", "background", "position", "size", "style", "background_rgb")
DEFAULT_SAMPLERS = "dpmpp_2m_sde:20,30;dpmpp_2m:20;ancestral:50,100"
REFERENCE_SAMPLER = ("ancestral", defaults.STEPS["ancestral"])  # GLIDE's own sampler and steps
FAST_SAMPLER = f"{defaults.SAMPLER}:{defaults.STEPS[defaults.SAMPLER]}"  # the pipeline's default
ALL_PARTS = ("guidance", "samplers", "finetune", "pipeline", "aspect")
DEFAULT_ASPECTS = "1:1,2:1,1:2"


# --- prompts, settings, cache ------------------------------------------------------------------------------------


def resolve_world(model_dir: Path, spec: str | None):
    """--world (a dataset folder or manifest) or the world recorded in the model's provenance."""
    if spec:
        return world_from_manifest(spec)
    provenance = model_dir / "provenance.json"
    if provenance.is_file():
        world = json.loads(provenance.read_text()).get("world")
        if isinstance(world, dict):
            return World.from_dict(world)
    print(f"note: {model_dir} records no world; using the default world (pass --world DATASET)", file=sys.stderr)
    return DEFAULT_WORLD


def make_targets(
    world, n: int, prompt_seed: int, suffix: str = "", aspect: float = 1.0
) -> tuple[list[dict], list[str]]:
    """Scenes i < n of the prompt seed and their captions; `aspect` (width / height) only keeps the geometry
    inside a non-square canvas, so every aspect gets the same prompts (paired)."""
    targets = [sample_attributes(world, sample_rng(prompt_seed, i), aspect=aspect) for i in range(n)]
    name_size = len(world.sizes) > 1
    return targets, [canonical_caption(t, name_size=name_size) + suffix for t in targets]


def slug(setting: dict) -> str:
    g = "none" if setting["guidance"] is None else f"{setting['guidance']:g}"
    suffix = f"-sfx{hashlib.sha1(setting['suffix'].encode()).hexdigest()[:8]}" if setting["suffix"] else ""
    up = setting.get("upsampler")
    if up:
        suffix += f"-up-{up['sampler']}-{up['steps']}-t{up['temperature']:g}-start{up['start_step']}"
    if setting.get("shape"):
        suffix += "-{}x{}".format(*setting["shape"])
    if setting.get("placement"):
        suffix += "-placed"
    return f"{setting['sampler']}-{setting['steps']}-g{g}-{setting['precision']}-s{setting['seed']}{suffix}"


class Cache:
    """Per-image reads of one (model, setting), stored in chunk files so any prefix can be reused."""

    def __init__(self, root: Path, model_id: str, setting: dict, chunk: int):
        self.dir = root / model_id.replace("/", "_").replace(":", "_") / slug(setting)
        self.chunk = chunk
        self.setting = setting

    def path(self, index: int) -> Path:
        return self.dir / f"chunk-{index // self.chunk:05d}-{self.chunk}.json"

    def load(self, start: int) -> list[dict] | None:
        path = self.path(start)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        return data["reads"] if data.get("setting") == self.setting else None

    def store(self, start: int, reads: list[dict]) -> None:
        atomic_write_text(self.path(start), json.dumps({"setting": self.setting, "reads": reads}))


# --- generation and scoring --------------------------------------------------------------------------------------


def base_settings(setting: dict) -> SamplerSettings:
    """The base stage's sampler settings of a bench setting (placement only where the setting records it)."""
    return SamplerSettings(
        sampler=setting["sampler"],
        steps=setting["steps"],
        guidance=setting["guidance"],
        placement=bool(setting.get("placement")),
    )


def generate_reads(sm, setting: dict, prompts: list[str], seeds: list[int], batch_size: int, world) -> list[dict]:
    settings = base_settings(setting).check(1000, "base")
    dtype = torch.bfloat16 if setting["precision"] == "bf16" else torch.float32
    reads = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start : start + batch_size]]
        with torch.no_grad():
            x, _ = run_stage(sm, settings, batch, generators, torch.device("cpu"), dtype)
        pixels = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        reads += [read_image(image, world) for image in pixels]
    return reads


MIN_READ_SIDE = 16  # the evaluator's smallest side; smaller images (a tiny model's non-square base) are enlarged


def read_image(image: np.ndarray, world) -> dict:
    short = min(image.shape[:2])
    if short < MIN_READ_SIDE:
        height, width = (round(side * MIN_READ_SIDE / short) for side in image.shape[:2])
        image = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_CUBIC)
    read = read_scene(np.ascontiguousarray(image), world)
    return {k: read.get(k) for k in READ_KEYS}


def generate_pipeline_reads(
    pipeline: TextToImage, prompts: list[str], seeds: list[int], batch_size: int, world, shape=None
) -> list[dict]:
    """Per image: the read of the pipeline's output ('final', at its output size) and of its base image; `shape`
    is the base stage's (height, width) (default: the model's square)."""
    reads = []
    for batch in pipeline.generate_batches(prompts, seeds, batch_size, progress=False, shape=shape):
        reads += [
            {"final": read_image(np.asarray(g.image), world), "base": read_image(np.asarray(g.base_image), world)}
            for g in batch
        ]
    return reads


def measure(sm, model_id: str, setting: dict, prompts: list[str], args, world, generate=None) -> list[dict]:
    """Reads of images 0..n-1 for a setting, generated chunk by chunk (cached). `generate(prompts, seeds)`
    replaces the base stage alone (the pipeline part)."""
    if generate is None:

        def generate(chunk_prompts, seeds):
            return generate_reads(sm, setting, chunk_prompts, seeds, args.batch_size, world)

    cache = Cache(args.results, model_id, setting, args.chunk)
    reads: list[dict] = []
    n = len(prompts)
    for start in range(0, n, args.chunk):
        stop = min(start + args.chunk, n)
        cached = cache.load(start)
        if cached is None or len(cached) < stop - start:
            full_stop = start + args.chunk  # always fill whole chunks so later runs can reuse them
            more_targets, more_prompts = make_targets(
                world, full_stop, args.prompt_seed, setting["suffix"], setting.get("aspect", 1.0)
            )
            t0 = time.perf_counter()
            cached = generate(more_prompts[start:full_stop], [args.seed + i for i in range(start, full_stop)])
            print(f"  {slug(setting)} images {start}-{full_stop - 1}: {time.perf_counter() - t0:.0f}s", flush=True)
            cache.store(start, cached)
        reads.extend(cached[: stop - start])
    return reads


def correct(read: dict, target: dict, attrs) -> bool:
    return all(read.get(a) == target[a] for a in attrs)


def background_error(read: dict, target: dict) -> float:
    """RGB distance between the image's border (as read) and the palette colour of the true background."""
    observed = read.get("background_rgb")
    if observed is None:  # reads cached before the evaluator reported the colour
        return float("nan")
    return float(np.linalg.norm(np.asarray(observed, float) - np.asarray(PALETTE[target["background"]], float)))


def summarise(reads: list[dict], targets: list[dict]) -> dict:
    n = len(reads)
    out = {"n": n}
    for name, attrs in (
        ("all_three", CONTENT_ATTRIBUTES),
        ("shape", ("shape",)),
        ("color", ("color",)),
        ("background", ("background",)),
        ("position", ("position",)),
    ):
        out[name] = float(np.mean([correct(r, t, attrs) for r, t in zip(reads, targets)]))
    out["style_rate"] = float(np.mean([r.get("style") == "comic" for r in reads]))
    errors = [background_error(r, t) for r, t in zip(reads, targets)]
    out["background_error"] = None if any(math.isnan(e) for e in errors) else float(np.median(errors))
    out["ci95"] = 1.96 * math.sqrt(max(out["all_three"] * (1 - out["all_three"]), 1e-12) / n)
    return out


def paired_difference(a: list[dict], b: list[dict], targets: list[dict]) -> tuple[float, float]:
    """Mean difference in all-three accuracy (a - b) on the same seeds, and its 95% half-width."""
    d = np.array(
        [correct(x, t, CONTENT_ATTRIBUTES) - correct(y, t, CONTENT_ATTRIBUTES) for x, y, t in zip(a, b, targets)],
        dtype=float,
    )
    return float(d.mean()), float(1.96 * d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


# --- report ------------------------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def table(rows: list[tuple[str, dict]], extra: dict[str, str] | None = None) -> str:
    head = (
        "| setting | n | all three (±95%) | shape | colour | background | position | comic style | "
        "bg RGB error (median) |"
    )
    lines = [head, "|" + "---|" * 9]
    for label, s in rows:
        note = f" {extra[label]}" if extra and label in extra else ""
        bg_error = "–" if s.get("background_error") is None else f"{s['background_error']:.1f}"
        lines.append(
            f"| {label}{note} | {s['n']} | {pct(s['all_three'])} ± {100 * s['ci95']:.1f} | "
            f"{pct(s['shape'])} | {pct(s['color'])} | {pct(s['background'])} | {pct(s['position'])} | "
            f"{pct(s['style_rate'])} | {bg_error} |"
        )
    return "\n".join(lines)


PLOTTED_ATTRIBUTES = (
    ("all_three", "all three"),
    ("shape", "shape"),
    ("color", "colour"),
    ("background", "background"),
    ("position", "position"),
)


def plot(path: Path, guidance_rows, sampler_rows, finetune_rows, pipeline_rows=()) -> bool:
    """One panel per part that ran: accuracy vs guidance, samplers, fine-tune, and base vs pipeline (`pipeline_rows`:
    the pipeline report's rows)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return False
    panels = [p for p in (guidance_rows, sampler_rows, finetune_rows, pipeline_rows) if p]
    if not panels:  # e.g. only the aspect part ran
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    axes = list(axes[0])
    if guidance_rows:
        ax = axes.pop(0)
        scales = [g for g, _ in guidance_rows]
        for key, label in PLOTTED_ATTRIBUTES:
            ax.plot(
                scales,
                [100 * s[key] for _, s in guidance_rows],
                marker="o",
                label=label,
                linewidth=2.5 if key == "all_three" else 1.2,
            )
        ax.set(
            xlabel="guidance scale (0 = unconditional)",
            ylabel="accuracy %",
            ylim=(0, 100),
            title="caption accuracy vs guidance",
        )
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if sampler_rows:
        ax = axes.pop(0)
        by_sampler: dict[str, list] = {}
        for (sampler, steps), s in sampler_rows:
            calls = int(str(steps).removeprefix("ddim").removeprefix("fast") or 0)
            by_sampler.setdefault(sampler, []).append((calls, s))
        for sampler, points in by_sampler.items():
            points.sort()
            ax.errorbar(
                [p for p, _ in points],
                [100 * s["all_three"] for _, s in points],
                yerr=[100 * s["ci95"] for _, s in points],
                marker="o",
                capsize=3,
                label=sampler,
            )
        ax.set(
            xlabel="model evaluations (steps)",
            ylabel="all-three accuracy %",
            ylim=(0, 100),
            title="samplers (paired seeds)",
        )
        ax.set_xscale("log")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if finetune_rows:
        ax = axes.pop(0)
        labels = [label for label, _ in finetune_rows]
        xs = np.arange(len(labels))
        ax.bar(xs - 0.2, [100 * s["all_three"] for _, s in finetune_rows], 0.4, label="caption accuracy")
        ax.bar(xs + 0.2, [100 * s["style_rate"] for _, s in finetune_rows], 0.4, label="comic style rate")
        ax.set_xticks(xs, labels)
        ax.set(ylim=(0, 100), ylabel="%", title="fine-tune: before / after")
        ax.legend(fontsize=8)
    if pipeline_rows:
        ax = axes.pop(0)
        xs = np.arange(len(PLOTTED_ATTRIBUTES))
        width = 0.8 / len(pipeline_rows)
        for k, row in enumerate(pipeline_rows):
            label = "base alone" if row["label"] == "base" else "base → upsampler"
            ax.bar(
                xs + (k - (len(pipeline_rows) - 1) / 2) * width,
                [100 * row[a] for a, _ in PLOTTED_ATTRIBUTES],
                width,
                label=label if len(pipeline_rows) <= 2 else row["label"],
            )
        ax.set_xticks(xs, [label for _, label in PLOTTED_ATTRIBUTES], fontsize=8)
        ax.set(ylim=(0, 105), ylabel="accuracy %", title="what users see: base vs pipeline")
        ax.legend(fontsize=8, loc="lower left")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return True


# --- main --------------------------------------------------------------------------------------------------------


def parse_samplers(spec: str) -> list[tuple[str, str]]:
    out = []
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, _, steps = part.partition(":")
        if not steps:
            raise SystemExit(f"--samplers: {part!r} must look like sampler:steps[,steps]")
        out += [(name.strip(), s.strip()) for s in steps.split(",") if s.strip()]
    return out


def parse_upsamplers(spec: str) -> list[SamplerSettings]:
    """'sampler:steps:start;...' -> upsampler settings (the pipeline's defaults for guidance and temperature)."""
    out = []
    for part in spec.split(";"):
        if not part.strip():
            continue
        fields = [f.strip() for f in part.split(":")]
        if len(fields) != 3 or not fields[2].isdigit():
            raise SystemExit(f"--upsamplers: {part!r} must look like sampler:steps:start (e.g. ddim:25:500)")
        out.append(
            SamplerSettings(
                sampler=fields[0],
                steps=fields[1],
                guidance=UPSAMPLER_DEFAULTS.guidance,
                temperature=UPSAMPLER_DEFAULTS.temperature,
                start_step=int(fields[2]),
            )
        )
    return out


def find_upsampler(model_arg: Path | None, model_dir: Path, upsampler_arg: Path | None) -> Path | None:
    """--upsampler, else the pipeline folder's upsampler, else the bundled one when the base is the bundled base."""
    if upsampler_arg is not None:
        return upsampler_arg
    if model_arg is not None and (model_arg / "upsampler" / "config.json").is_file():
        return model_arg / "upsampler"
    if model_arg is None:
        return bundled_model_path("upsampler")
    return None


def pipeline_part(
    sm, up_dir: Path, upsamplers: list[SamplerSettings], base_setting: dict, prompts, targets, args, world
) -> tuple[str, dict]:
    """Rows for the base alone and for base -> upsampler under each upsampler setting (paired seeds)."""
    up = load_sampling_model(up_dir, "upsampler", torch.device("cpu"))
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    base = base_settings(base_setting)
    rows, notes, report_rows, base_reads = [], {}, [], None
    for up_settings in upsamplers:
        pipeline = TextToImage(ModelPair(sm, up), torch.device("cpu"), dtype, base=base, upsampler=up_settings)
        u = pipeline.up_settings
        setting = {
            **base_setting,
            "upsampler": {
                "sampler": u.sampler,
                "steps": str(u.steps),
                "temperature": u.temperature,
                "start_step": u.start_step,
            },
        }
        reads = measure(
            sm,
            pipeline.model_id,
            setting,
            prompts,
            args,
            world,
            generate=lambda p, seeds, pipeline=pipeline: generate_pipeline_reads(
                pipeline, p, seeds, args.batch_size, world
            ),
        )
        if base_reads is None:
            base_reads = [r["base"] for r in reads]
            rows.append((f"base alone ({sm.image_size} px)", summarise(base_reads, targets)))
            report_rows.append({"label": "base", **rows[-1][1]})
        final = [r["final"] for r in reads]
        start = f"from t={u.start_step}" if u.start_step else "from noise"
        label = f"base -> upsampler {u.sampler} {u.steps} {start} ({up.image_size} px)"
        rows.append((label, summarise(final, targets)))
        d, h = paired_difference(final, base_reads, targets)
        notes[label] = f"({100 * d:+.1f} ± {100 * h:.1f} vs base)"
        report_rows.append({"label": label, "upsampler": setting["upsampler"], **rows[-1][1]})
    section = (
        f"### What users see: base -> upsampler ({up_dir}; base {base_setting['sampler']} "
        f"{base_setting['steps']}, guidance {base_setting['guidance']:g}; paired seeds)\n\n" + table(rows, notes)
    )
    return section, {"upsampler": str(up_dir), "upsampler_id": up.model_id, "rows": report_rows}


def parse_aspects(spec: str) -> list[tuple[str, float]]:
    """'1:1,2:1,1:2' -> [(label, width / height)]."""
    out = []
    for part in spec.split(","):
        width, sep, height = part.strip().partition(":")
        if not part.strip():
            continue
        try:
            out.append((part.strip(), float(width) / float(height) if sep else float(width)))
        except (ValueError, ZeroDivisionError):
            raise SystemExit(f"--aspects: {part!r} must look like W:H (e.g. 2:1)") from None
    return out


def aspect_part(
    sm, up_dir: Path | None, upsampler: SamplerSettings, base_setting: dict, args, world
) -> tuple[str, dict]:
    """Rows per aspect: the same prompts and seeds generated through the pipeline at shape_for_aspect's shape,
    the base image and (with an upsampler) the final one read back on their own non-square canvas."""
    up = load_sampling_model(up_dir, "upsampler", torch.device("cpu")) if up_dir is not None else None
    models = ModelPair(sm, up)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    pipeline = TextToImage(models, torch.device("cpu"), dtype, base=base_settings(base_setting), upsampler=upsampler)
    rows, report_rows = [], []
    for label, aspect in parse_aspects(args.aspects):
        shape = shape_for_aspect(models, aspect)
        targets, prompts = make_targets(world, args.samples, args.prompt_seed, aspect=aspect)
        setting = {**base_setting, "aspect": aspect, "shape": list(shape)}
        if pipeline.up_settings is not None:
            u = pipeline.up_settings
            setting["upsampler"] = {
                "sampler": u.sampler, "steps": str(u.steps), "temperature": u.temperature, "start_step": u.start_step
            }  # fmt: skip
        reads = measure(
            sm, pipeline.model_id, setting, prompts, args, world,
            generate=lambda p, seeds, shape=shape: generate_pipeline_reads(
                pipeline, p, seeds, args.batch_size, world, shape
            ),
        )  # fmt: skip
        stages = [("base", shape, [r["base"] for r in reads])]
        if up is not None:
            stages.append(("final", output_shape(models, shape), [r["final"] for r in reads]))
        for stage, (height, width), stage_reads in stages:
            rows.append((f"{label} {stage} ({width}x{height} px)", summarise(stage_reads, targets)))
            report_rows.append({"aspect": label, "stage": stage, "width": width, "height": height, **rows[-1][1]})
    up_text = f", upsampler {up_dir}" if up is not None else ""
    section = (
        f"### Non-square scenes (base {base_setting['sampler']} {base_setting['steps']}, guidance "
        f"{base_setting['guidance']:g}{up_text}; same prompts and seeds for every aspect)\n\n" + table(rows)
    )
    return section, {"upsampler": str(up_dir) if up is not None else None, "rows": report_rows}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_arguments(parser)
    _add_measurement_arguments(parser)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which models and parts: the base, its fine-tune, the upsampler and its settings."""
    parser.add_argument(
        "--model", type=Path, default=None, help="base model folder or pipeline folder (default: the bundled base)"
    )
    parser.add_argument(
        "--finetuned",
        type=Path,
        default=None,
        help="model folder of a fine-tune of --model (e.g. a quickstart run's finetune/model) for 'finetune'",
    )
    parser.add_argument(
        "--parts",
        default=",".join(ALL_PARTS),
        help=f"comma-separated parts to run: {', '.join(ALL_PARTS)} (default: all; "
        "finetune needs --finetuned, pipeline an upsampler)",
    )
    parser.add_argument(
        "--upsampler",
        type=Path,
        default=None,
        help="upsampler folder of the pipeline part (default: the pipeline folder's, or the bundled "
        "upsampler with the bundled base)",
    )
    default_up = f"{UPSAMPLER_DEFAULTS.sampler}:{UPSAMPLER_DEFAULTS.steps}:{UPSAMPLER_DEFAULTS.start_step}"
    parser.add_argument(
        "--upsamplers",
        default=default_up,
        help="upsampler settings of the pipeline part, sampler:steps:start[;...] (start 0 = from pure "
        f"noise; default: the pipeline's, {default_up})",
    )


def _add_measurement_arguments(parser: argparse.ArgumentParser) -> None:
    """How each part measures: samples, guidance scales, samplers, precision, batching, seeds, the results folder."""
    parser.add_argument("--samples", type=int, default=500, help="images per point (default: 500)")
    parser.add_argument(
        "--aspects",
        default=DEFAULT_ASPECTS,
        help=f"W:H canvases of the aspect part, comma-separated (default: {DEFAULT_ASPECTS})",
    )
    parser.add_argument("--guidance", default="0,1,2,3,5", help="guidance scales of the sweep (default: 0,1,2,3,5)")
    parser.add_argument(
        "--no-placement",
        dest="placement",
        action="store_false",
        help="the model alone: do not move subjects to the position their captions name (sampling's default "
        "does, sampling/placement.py)",
    )
    parser.add_argument(
        "--fast-sampler",
        default=FAST_SAMPLER,
        help=f"sampler:steps of the guidance sweep, the fine-tune and pipeline parts (default: {FAST_SAMPLER})",
    )
    parser.add_argument(
        "--samplers",
        default=DEFAULT_SAMPLERS,
        help=f"sampler:steps[,steps];... compared at one guidance (default: {DEFAULT_SAMPLERS})",
    )
    parser.add_argument(
        "--sampler-guidance",
        default="best",
        help="guidance scale of the sampler comparison and the fine-tune part: a number or 'best' "
        f"(the sweep's best all-three scale; {defaults.GUIDANCE:g} when the sweep is not run)",
    )
    parser.add_argument(
        "--style-suffix",
        default=", comic style",
        help="appended to the prompts of the fine-tune part (default: ', comic style')",
    )
    parser.add_argument(
        "--world",
        default=None,
        help="dataset folder/manifest whose world to use (default: the world in the model's provenance.json)",
    )
    parser.add_argument(
        "--precision",
        choices=["bf16", "fp32"],
        default="bf16",
        help="autocast precision (default: bf16, faster on recent CPUs)",
    )
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward batch (default: 50)")
    parser.add_argument("--chunk", type=int, default=50, help="images per cached chunk (default: 50)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of image 0 (image i uses seed+i)")
    parser.add_argument("--prompt-seed", type=int, default=12345, help="seed of the evaluation scenes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO / "bench" / "results" / "quality",
        help="cache and report folder (default: bench/results/quality)",
    )


def base_model_dir(model_arg: Path | None) -> Path:
    """--model (a model or pipeline folder: its base), or the bundled base."""
    model_dir = bundled_model_path("base") if model_arg is None else model_arg
    return model_dir / "base" if (model_dir / "base" / "config.json").is_file() else model_dir


def chosen_parts(parser: argparse.ArgumentParser, args: argparse.Namespace, up_dir: Path | None) -> set[str]:
    """The --parts to run; a part asked for by name that cannot run is an error, one left at the default is skipped."""
    if args.samples < 1 or args.batch_size < 1 or args.chunk < 1:
        parser.error("--samples, --batch-size and --chunk must be positive")
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - set(ALL_PARTS)
    if unknown:
        parser.error(f"unknown --parts: {', '.join(sorted(unknown))}")
    asked = args.parts != parser.get_default("parts")
    if "finetune" in parts and args.finetuned is None:
        if asked:
            parser.error("--parts finetune needs --finetuned DIR")
        parts.discard("finetune")
    if "pipeline" in parts and up_dir is None:
        if asked:
            parser.error("--parts pipeline needs an upsampler: pass a pipeline folder as --model, or --upsampler DIR")
        parts.discard("pipeline")
    return parts


class Bench:
    """One run's model, world and evaluation prompts; each part measures settings against them."""

    def __init__(self, args: argparse.Namespace, model_dir: Path):
        self.args = args
        self.model_dir = model_dir
        self.sm = load_sampling_model(model_dir, "base", torch.device("cpu"))
        self.world = resolve_world(model_dir, args.world)
        self.targets, self.prompts = make_targets(self.world, args.samples, args.prompt_seed)
        self.fast_sampler, _, self.fast_steps = args.fast_sampler.partition(":")

    def setting(self, sampler: str, steps, guidance, suffix: str = "") -> dict:
        args = self.args
        return {
            "sampler": sampler,
            "steps": str(steps),
            "guidance": guidance,
            "precision": args.precision,
            "seed": args.seed,
            "prompt_seed": args.prompt_seed,
            "suffix": suffix,
            # only when on, so that reads cached before placement existed stay valid for --no-placement
            **({"placement": True} if args.placement else {}),
        }

    def fast_setting(self, guidance, suffix: str = "") -> dict:
        return self.setting(self.fast_sampler, self.fast_steps, guidance, suffix)

    def measure(self, model, setting: dict, prompts: list[str]) -> list[dict]:
        return measure(model, model.model_id, setting, prompts, self.args, self.world)


def guidance_part(bench: Bench) -> tuple[list, str, list]:
    """Accuracy at each guidance scale of the sweep, with the fast sampler."""
    rows = []
    for g in [float(x) for x in bench.args.guidance.split(",") if x.strip()]:
        rows.append((g, summarise(bench.measure(bench.sm, bench.fast_setting(g), bench.prompts), bench.targets)))
    section = f"### Guidance scale ({bench.fast_sampler} {bench.fast_steps} steps)\n\n" + table(
        [(f"guidance {g:g}", s) for g, s in rows]
    )
    return rows, section, [{"guidance": g, **s} for g, s in rows]


def comparison_scale(args: argparse.Namespace, guidance_rows: list) -> float:
    """--sampler-guidance, or the sweep's best scale ('best'), or the default scale when the sweep did not run."""
    if args.sampler_guidance != "best":
        return float(args.sampler_guidance)
    return max(guidance_rows, key=lambda r: r[1]["all_three"])[0] if guidance_rows else defaults.GUIDANCE


def samplers_part(bench: Bench, scale: float) -> tuple[list, str, list]:
    """Each sampler and step count at one guidance scale, with paired differences against GLIDE's ancestral 100."""
    rows, all_reads = [], {}
    for sampler, steps in parse_samplers(bench.args.samplers):
        reads = bench.measure(bench.sm, bench.setting(sampler, steps, scale), bench.prompts)
        all_reads[(sampler, steps)] = reads
        rows.append(((sampler, steps), summarise(reads, bench.targets)))
    notes = {}
    reference = all_reads.get(REFERENCE_SAMPLER)
    if reference is not None:
        for key, reads in all_reads.items():
            if key != REFERENCE_SAMPLER:
                d, h = paired_difference(reads, reference, bench.targets)
                notes[f"{key[0]} {key[1]}"] = f"({100 * d:+.1f} ± {100 * h:.1f} vs {' '.join(REFERENCE_SAMPLER)})"
    section = f"### Samplers (guidance {scale:g}, paired seeds)\n\n" + table(
        [(f"{k[0]} {k[1]}", s) for k, s in rows], notes
    )
    return rows, section, [{"sampler": k[0], "steps": k[1], "guidance": scale, **s} for k, s in rows]


def finetune_part(bench: Bench, scale: float) -> tuple[list, str, dict]:
    """Caption accuracy and comic-style rate before and after the fine-tune, prompts ending in the style phrase."""
    args = bench.args
    ft_dir = args.finetuned / "base" if (args.finetuned / "base" / "config.json").is_file() else args.finetuned
    ft = load_sampling_model(ft_dir, "base", torch.device("cpu"))
    targets, prompts = make_targets(bench.world, args.samples, args.prompt_seed, args.style_suffix)
    rows = []
    for label, model in (("before (bundled)", bench.sm), ("after fine-tune", ft)):
        reads = bench.measure(model, bench.fast_setting(scale, args.style_suffix), prompts)
        rows.append((label, summarise(reads, targets)))
    section = f"### Fine-tune ({ft_dir}; prompts end with {args.style_suffix!r}; guidance {scale:g})\n\n" + table(rows)
    report = {
        "finetuned": str(ft_dir),
        "suffix": args.style_suffix,
        "guidance": scale,
        "rows": [{"label": label, **s} for label, s in rows],
    }
    return rows, section, report


def write_report(bench: Bench, sections: list[str], report: dict, rows: dict, argv: list[str] | None) -> None:
    """quality.md (also printed), quality.json and, with matplotlib, quality.png under --results."""
    args = bench.args
    text = (
        f"## Quality benchmark\n\nModel `{bench.model_dir}` (`{bench.sm.model_id}`), {args.samples} samples per "
        f"point, {args.precision}, paired seeds. Command: `python bench/quality.py {' '.join(argv or sys.argv[1:])}`"
        "\n\n" + "\n\n".join(sections) + "\n"
    )
    print("\n" + text)
    for name, body in (("quality.md", text), ("quality.json", json.dumps(report, indent=2))):
        atomic_write_text(args.results / name, body)
    pipeline_rows = report.get("pipeline", {}).get("rows", [])
    if plot(args.results / "quality.png", rows["guidance"], rows["samplers"], rows["finetune"], pipeline_rows):
        print(f"wrote {args.results / 'quality.png'}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    model_dir = base_model_dir(args.model)
    up_dir = find_upsampler(args.model, model_dir, args.upsampler)
    parts = chosen_parts(parser, args, up_dir)
    upsamplers = parse_upsamplers(args.upsamplers)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args, model_dir)
    args.results.mkdir(parents=True, exist_ok=True)
    world = bench.world
    print(
        f"model {model_dir} ({bench.sm.model_id}); world {len(world.shapes)} shapes x {len(world.colors)} colours x "
        f"{len(world.backgrounds)} backgrounds; {args.samples} samples per point, {args.precision}",
        flush=True,
    )
    report = {
        "model": str(model_dir),
        "model_id": bench.sm.model_id,
        "samples": args.samples,
        "precision": args.precision,
        "world": world.to_dict(),
        "command": " ".join(sys.argv),
    }
    sections, rows = [], {"guidance": [], "samplers": [], "finetune": []}
    if "guidance" in parts:
        rows["guidance"], section, report["guidance"] = guidance_part(bench)
        sections.append(section)
    scale = comparison_scale(args, rows["guidance"])
    if "samplers" in parts:
        rows["samplers"], section, report["samplers"] = samplers_part(bench, scale)
        sections.append(section)
    if "finetune" in parts:
        rows["finetune"], section, report["finetune"] = finetune_part(bench, scale)
        sections.append(section)
    if "pipeline" in parts:
        section, report["pipeline"] = pipeline_part(
            bench.sm, up_dir, upsamplers, bench.fast_setting(scale), bench.prompts, bench.targets, args, world
        )
        sections.append(section)
    if "aspect" in parts:
        section, report["aspect"] = aspect_part(
            bench.sm,
            up_dir,
            upsamplers[0] if upsamplers else UPSAMPLER_DEFAULTS,
            bench.fast_setting(scale),
            args,
            world,
        )
        sections.append(section)
    write_report(bench, sections, report, rows, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
