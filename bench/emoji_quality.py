"""End-to-end quality of an emoji pipeline (bundled-emoji by default), read back with the emoji world's evaluator
(not part of CI).

Prompts are canonical captions of scenes from the model's emoji world ("a small sailboat in the top left on a cyan
background", "a cat in the top left and a robot in the bottom right on a pink background"): the world the base
records in its provenance, or --world DATASET. Every image goes through the whole sampling pipeline users get
(base -> upsampler, the pipeline's own code and default settings) at each --guidance scale; image i starts from
seed + i at every scale (paired seeds). `data_pipeline.emoji_world.read_emoji_scene` reads each final image back:

  emoji       every emoji of the caption drawn (and no other)
  background  the right background colour
  position    every emoji at a named place (as a set: whichever emoji stands there)
  all         every emoji at its own place, on the right background (sizes not required)

The base image of each sample is read too (the same seeds; what the upsampler starts from), and so is the
upsampler's output from each target scene rendered at the base's size (a perfect base image): what the upsampler
alone loses. Resumable: reads are cached in chunks under --results per model and setting, so a rerun with more
--samples only draws the new images.
Prints a table; writes emoji.md, emoji.json and emoji-sheet.png (a contact sheet of the best scale) to --report-dir.

    python bench/emoji_quality.py                                   # bundled-emoji, 500 samples per scale
    python bench/emoji_quality.py --samples 64 --guidance 3,5 --model runs/emoji-trial
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from quality import Cache  # noqa: E402

from data_pipeline.emoji_world import (  # noqa: E402
    EmojiWorld,
    canonical_emoji_caption,
    emoji_world_from_manifest,
    read_emoji_scene,
    render_emoji_scene,
    sample_emoji_attributes,
    score_emoji_reads,
)
from data_pipeline.fsutil import atomic_write, atomic_write_text  # noqa: E402
from data_pipeline.synthetic.world import sample_rng  # noqa: E402
from finetune.diffusion import defaults  # noqa: E402
from sampling.loading import load_models  # noqa: E402
from sampling.pipeline import TextToImage, run_stage, tensor_to_images  # noqa: E402
from sampling.settings import SamplerSettings  # noqa: E402

TARGETS = {"emoji": 0.80, "background": 0.90, "position": 0.80}  # issue 17's bar, at the best scale
MEASURES = ("emoji", "background", "position", "all")
SHEET_COLUMNS, SHEET_ROWS, CAPTION_PX, CAPTION_LINES = 8, 4, 52, 5  # Pillow's default font: ~10 px a line


def world_of(model_dir: Path, spec: str | None) -> EmojiWorld:
    """--world (an emoji-scenes dataset folder or its manifest), else the world the base's provenance records."""
    if spec:
        return emoji_world_from_manifest(spec)
    provenance = model_dir / "provenance.json"
    world = json.loads(provenance.read_text()).get("world") if provenance.is_file() else None
    if not isinstance(world, dict) or "emoji" not in world:
        raise SystemExit(f"{model_dir} records no emoji world; pass --world DATASET (an emoji-scenes dataset)")
    return EmojiWorld.from_dict(world)


def make_targets(world: EmojiWorld, n: int, prompt_seed: int) -> tuple[list[dict], list[str]]:
    """Scenes 0..n-1 of the prompt seed and their canonical captions, naming sizes where the training captions do
    (a single emoji when the world has several sizes; never a pair's)."""
    targets = [sample_emoji_attributes(world, sample_rng(prompt_seed, i)) for i in range(n)]
    return targets, [canonical_emoji_caption(t, name_size=world.names_size(len(t["subjects"]))) for t in targets]


def brief(read: dict) -> dict:
    """What the scores need of a read (the cache keeps only this)."""
    return {
        "subjects": [{k: s[k] for k in ("emoji", "position", "size")} for s in read["subjects"]],
        "background": read["background"],
    }


def placed(read: dict, target: dict) -> bool:
    """Every emoji at its own place (whatever its size), on the right background."""
    places = [sorted((s["emoji"], s["position"]) for s in scene["subjects"]) for scene in (read, target)]
    return places[0] == places[1] and read["background"] == target["background"]


def summarise(reads: list[dict], targets: list[dict]) -> dict:
    """Rates of the emoji evaluator's scoring (emoji, background, position) and `all` (placed), with 95% intervals."""
    scores = score_emoji_reads(reads, targets)
    scores["all"] = float(np.mean([placed(r, t) for r, t in zip(reads, targets)]))
    out: dict = {"n": len(reads)}
    for measure in MEASURES:
        out[measure] = scores[measure]
        out[f"{measure}_ci95"] = 1.96 * math.sqrt(max(scores[measure] * (1 - scores[measure]), 1e-12) / len(reads))
    return out


def draw(pipeline: TextToImage, prompts: list[str], seeds: list[int], batch_size: int):
    """The final and base images of the prompts (uint8 arrays)."""
    for batch in pipeline.generate_batches(prompts, seeds, batch_size, progress=False):
        for g in batch:
            yield np.asarray(g.image), np.asarray(g.base_image)


def cached_reads(args, model_id: str, setting: dict, n: int, label: str, draw_chunk, world) -> list[dict]:
    """Reads of images 0..n-1 under one setting, drawn chunk by chunk (`draw_chunk(targets, prompts, seeds)`) and
    cached with their prompts: a cached chunk whose prompts are not today's (another --prompt-seed, captions
    phrased otherwise) is drawn again."""
    cache = Cache(args.results, model_id, setting, args.chunk)
    full = -(-n // args.chunk) * args.chunk  # whole chunks: reusable by a later, larger run
    targets, prompts = make_targets(world, full, args.prompt_seed)
    reads = []
    for start in range(0, n, args.chunk):
        stop, end = min(start + args.chunk, n), start + args.chunk
        cached = cache.load(start)
        if cached is None or [r.get("prompt") for r in cached] != prompts[start:end]:
            t0 = time.perf_counter()
            seeds = [args.seed + i for i in range(start, end)]
            drawn = draw_chunk(targets[start:end], prompts[start:end], seeds)
            cached = [{"prompt": p, **r} for p, r in zip(prompts[start:end], drawn)]
            print(f"  {label} images {start}-{end - 1}: {time.perf_counter() - t0:.0f}s", flush=True)
            cache.store(start, cached)
        reads.extend(cached[: stop - start])
    return reads


def measure(pipeline: TextToImage, setting: dict, n: int, args, world) -> list[dict]:
    """Reads ({final, base}) of images 0..n-1 through the whole pipeline under one setting."""

    def draw_chunk(targets: list[dict], prompts: list[str], seeds: list[int]) -> list[dict]:
        return [
            {"final": brief(read_emoji_scene(final, world)), "base": brief(read_emoji_scene(base, world))}
            for final, base in draw(pipeline, prompts, seeds, args.batch_size)
        ]

    label = f"guidance {setting['guidance']:g}"
    return cached_reads(args, pipeline.model_id, setting, n, label, draw_chunk, world)


def upsample_rendered(
    pipeline: TextToImage, targets: list[dict], prompts: list[str], seeds: list[int], batch_size: int
):
    """The upsampler's images (uint8 arrays) from the target scenes rendered at the base's size: what it makes of a
    perfect base image."""
    low_size = pipeline.models.base.image_size
    for i in range(0, len(prompts), batch_size):
        scenes = np.stack([render_emoji_scene(t, low_size) for t in targets[i : i + batch_size]])
        low_res = torch.from_numpy(scenes).permute(0, 3, 1, 2).float() / 127.5 - 1
        generators = [torch.Generator().manual_seed(s) for s in seeds[i : i + batch_size]]
        x, _ = run_stage(
            pipeline.models.upsampler,
            pipeline.up_settings,
            prompts[i : i + batch_size],
            generators,
            pipeline.device,
            pipeline.dtype,
            low_res=low_res,
        )
        for image in tensor_to_images(x):
            yield np.asarray(image)


def measure_upsampler(pipeline: TextToImage, n: int, args, world) -> list[dict]:
    """Reads of the upsampler alone on rendered low-res scenes (the same prompts and seeds as the pipeline)."""
    setting = {**bench_setting(pipeline, args.seed), "sampler": "rendered", "steps": pipeline.models.base.image_size}
    setting.update(guidance=None, placement=False)

    def draw_chunk(targets: list[dict], prompts: list[str], seeds: list[int]) -> list[dict]:
        images = upsample_rendered(pipeline, targets, prompts, seeds, args.batch_size)
        return [{"final": brief(read_emoji_scene(image, world))} for image in images]

    model_id = pipeline.models.upsampler.model_id
    return cached_reads(args, model_id, setting, n, "rendered low-res", draw_chunk, world)


def contact_sheet(images: list[np.ndarray], captions: list[str]) -> Image.Image:
    """The images in a grid, each over its prompt (wrapped to at most CAPTION_LINES lines)."""
    side = images[0].shape[0]
    rows = math.ceil(len(images) / SHEET_COLUMNS)
    sheet = Image.new("RGB", (SHEET_COLUMNS * side, rows * (side + CAPTION_PX)), "white")
    pen = ImageDraw.Draw(sheet)
    for i, (image, caption) in enumerate(zip(images, captions)):
        x, y = (i % SHEET_COLUMNS) * side, (i // SHEET_COLUMNS) * (side + CAPTION_PX)
        sheet.paste(Image.fromarray(image), (x, y))
        words, lines = caption.split(), [""]
        for word in words:
            if len(lines[-1]) + len(word) + 1 > side // 6 and lines[-1]:
                lines.append("")
            lines[-1] = f"{lines[-1]} {word}".strip()
        pen.multiline_text((x + 2, y + side + 1), "\n".join(lines[:CAPTION_LINES]), fill="black", spacing=0)
    return sheet


def by_subject_count(reads: list[dict], targets: list[dict]) -> list[dict]:
    """`summarise` of the prompts with one emoji and of those with two, separately."""
    rows = []
    for count, label in ((1, "one emoji"), (2, "two emoji")):
        chosen = [i for i, t in enumerate(targets) if len(t["subjects"]) == count]
        if chosen:
            rows.append({"prompts": label, **summarise([reads[i] for i in chosen], [targets[i] for i in chosen])})
    return rows


def measure_cells(row: dict) -> str:
    """A row's rates with their 95% half-widths, as markdown table cells."""
    return " | ".join(pct(row[m], row[f"{m}_ci95"]) for m in MEASURES)


def breakdown_table(rows: list[dict]) -> str:
    lines = ["| prompts | n | emoji | background | position | all |", "|---|---|---|---|---|---|"]
    lines += [f"| {row['prompts']} | {row['n']} | {measure_cells(row)} |" for row in rows]
    return "\n".join(lines)


def pct(rate: float, half: float | None = None) -> str:
    return f"{100 * rate:.1f}%" + (f" ± {100 * half:.1f}" if half is not None else "")


def table(rows: list[dict]) -> str:
    lines = ["| guidance | stage | n | emoji | background | position | all |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        scale = "-" if row["guidance"] is None else f"{row['guidance']:g}"
        lines.append(f"| {scale} | {row['stage']} | {row['n']} | {measure_cells(row)} |")
    return "\n".join(lines)


def pipeline_at(pair, sampler: str, steps: int, scale: float) -> TextToImage:
    """The sampling pipeline with its default settings, the base stage at this sampler and guidance scale."""
    base = SamplerSettings(sampler=sampler, steps=steps, guidance=scale)
    return TextToImage(pair, torch.device("cpu"), torch.float32, base=base)


def bench_setting(pipeline: TextToImage, seed: int) -> dict:
    """Everything that decides the images of a run, as the read cache keys them."""
    b = pipeline.base_settings
    up = pipeline.up_settings if pipeline.models.upsampler is not None else None
    upsampler = None
    if up is not None:
        upsampler = {
            "sampler": up.sampler,
            "steps": str(up.steps),
            "temperature": up.temperature,
            "start_step": up.start_step,
        }
    return {
        "world": "emoji",
        "sampler": b.sampler,
        "steps": b.steps,
        "guidance": b.guidance,
        "precision": "fp32",
        "seed": seed,
        "suffix": "",
        "placement": "pairs placed, halves guided" if b.placement else False,  # older reads are not reused
        "upsampler": upsampler,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="bundled-emoji", help="pipeline name or folder (default: %(default)s)")
    parser.add_argument("--upsampler", help="upsampler model folder (default: the pipeline's own)")
    parser.add_argument("--world", help="emoji-scenes dataset whose world the prompts come from (default: provenance)")
    parser.add_argument("--samples", type=int, default=500, help="images per guidance scale (default: %(default)s)")
    parser.add_argument("--guidance", default="3,5,7", help="comma-separated scales (default: %(default)s)")
    parser.add_argument(
        "--sampler",
        default=f"{defaults.SAMPLER}:{defaults.STEPS[defaults.SAMPLER]}",
        help="base sampler:steps (default: the pipeline's, %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--chunk", type=int, default=50, help="images per cache file (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="image i starts from seed + i (default: %(default)s)")
    parser.add_argument("--prompt-seed", type=int, default=12345, help="scene i of this seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--results", type=Path, default=REPO / "runs" / "emoji_quality", help="read cache")
    parser.add_argument("--report-dir", type=Path, default=REPO / "docs" / "quality", help="emoji.md/.json here")
    return parser


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[float], str, int]:
    try:
        scales = [float(g) for g in args.guidance.split(",") if g.strip()]
        sampler, steps = args.sampler.split(":")
        int(steps)
    except ValueError:
        parser.error("--guidance takes numbers like 3,5,7 and --sampler NAME:STEPS")
    if not scales or any(not 0 <= g <= 100 for g in scales):
        parser.error("--guidance: one or more scales between 0 and 100")
    for flag, value in (("--samples", args.samples), ("--batch-size", args.batch_size), ("--chunk", args.chunk)):
        if not 1 <= value <= 100_000:
            parser.error(f"{flag} must be between 1 and 100000, got {value}")
    return scales, sampler, int(steps)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    scales, sampler, steps = check(parser, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        pair = load_models(args.model, torch.device("cpu"), upsampler=args.upsampler)
    except (OSError, ValueError) as exc:  # not trained yet, a wrong folder: one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    world = world_of(Path(pair.base.source), args.world)
    targets, prompts = make_targets(world, args.samples, args.prompt_seed)
    rows, best, finals = [], None, {}
    for scale in scales:
        pipeline = pipeline_at(pair, sampler, steps, scale)
        reads = measure(pipeline, bench_setting(pipeline, args.seed), len(prompts), args, world)
        finals[scale] = [r["final"] for r in reads]
        stages = ("final", "base") if pair.upsampler is not None else ("base",)
        for stage in stages:
            size = pipeline.output_size if stage == "final" else pair.base.image_size
            label = f"base -> upsampler ({size} px)" if stage == "final" else f"base ({size} px)"
            rows.append({"guidance": scale, "stage": label, **summarise([r[stage] for r in reads], targets)})
        what_users_see = rows[-len(stages)]
        if best is None or what_users_see["all"] > best["all"]:
            best = what_users_see
    if pair.upsampler is not None:  # how much of the loss is the upsampler's: its output from perfect inputs
        reads = measure_upsampler(pipeline_at(pair, sampler, steps, scales[0]), len(prompts), args, world)
        label = f"rendered {pair.base.image_size} px -> upsampler ({pair.upsampler.image_size} px)"
        rows.append({"guidance": None, "stage": label, **summarise([r["final"] for r in reads], targets)})
    text = table(rows)
    met = {m: best[m] >= t for m, t in TARGETS.items()}
    verdict = ", ".join(
        f"{m} {pct(best[m])} (target {pct(t)}: {'met' if met[m] else 'not met'})" for m, t in TARGETS.items()
    )
    breakdown = by_subject_count(finals[best["guidance"]], targets)
    split = breakdown_table(breakdown)
    print(text + f"\n\nbest guidance {best['guidance']:g}: {verdict}\n\nby prompt, at the best guidance:\n{split}")
    args.report_dir.mkdir(parents=True, exist_ok=True)
    shown = min(args.samples, SHEET_COLUMNS * SHEET_ROWS)
    images = [
        final
        for final, _ in draw(
            pipeline_at(pair, sampler, steps, best["guidance"]),
            prompts[:shown],
            [args.seed + i for i in range(shown)],
            args.batch_size,
        )
    ]
    sheet = contact_sheet(images, prompts[:shown])
    atomic_write(args.report_dir / "emoji-sheet.png", lambda fh: sheet.save(fh, format="PNG"))
    command = "python bench/emoji_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    models = pair.base.model_id + (f" + {pair.upsampler.model_id}" if pair.upsampler else "")
    md = (
        f"## Emoji pipeline, end to end ({models})\n\n"
        f"{args.samples} prompts per scale, paired seeds, base {sampler} {steps}; emoji, position and all are read "
        "from the final image by the emoji world's evaluator.\n\n"
        + text
        + f"\n\nBest guidance {best['guidance']:g}: {verdict}.\n\nAt the best guidance, by prompt:\n\n{split}\n\n"
        f"Command: `{command.strip()}`\n\n"
        "![The first prompts at the best scale](emoji-sheet.png)\n"
    )
    atomic_write_text(args.report_dir / "emoji.md", md)
    report = {
        "model": pair.base.model_id,
        "upsampler": pair.upsampler.model_id if pair.upsampler else None,
        "samples": args.samples,
        "rows": rows,
        "best_guidance": best["guidance"],
        "best_by_prompt": breakdown,
        "targets": TARGETS,
    }
    atomic_write_text(args.report_dir / "emoji.json", json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
