"""Character adapters, measured with the synthetic world's evaluator (not part of CI).

Teaches the bundled base a new word, "zorp" = a purple star (the bundled world has circles, squares and triangles
in six colours, purple among them; the renderer and the evaluator also know stars, which the bundled base never
saw), from 20 rendered images with `python -m finetune adapter teach`, then reports over paired seeds (image i
starts from the same noise with and without the adapter):

  new      how often "zorp on a cyan background" draws zorp (a purple star), with the adapter and without;
  page     how often zorp stays zorp across the panels of comic pages (a script with a cast member zorp whose
           adapter is applied by the comic code, 6 panels a page);
  ordinary caption accuracy (shape, colour and background right) on ordinary captions of the bundled world,
           adapter on and off (the prior-preservation images are there to keep this from dropping).

Also: the adapter's size, and the time the teach command took (prior images, training) on this CPU.
Resumable: image reads are cached in chunks under --results (per model, adapter and setting), comic panels are
reused by the comic code, and the adapter is taught once; a rerun with more --samples only adds what is missing.

    python bench/adapters.py --samples 100 --threads 1
    python bench/adapters.py --samples 500            # the figures the issue asks for
    python bench/adapters.py --samples 500 --parts ordinary &   # two processes: one draws the ordinary captions,
    python bench/adapters.py --samples 500                       # the other the rest and then the report
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
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import quality  # noqa: E402  (bench/quality.py: cache, prompts, scoring)

from data_pipeline.fsutil import atomic_write_json, atomic_write_text  # noqa: E402
from data_pipeline.synthetic import World, make_caption, read_scene, render, sample_attributes, sample_rng  # noqa: E402
from finetune.adapters import apply_adapters  # noqa: E402
from finetune.adapters.teach import DEFAULTS as TEACH_DEFAULTS  # noqa: E402
from finetune.adapters.teach import add_arguments as add_teach_arguments  # noqa: E402
from finetune.adapters.teach import teach  # noqa: E402
from finetune.bundled_models import bundled_model_path  # noqa: E402
from finetune.model_id import model_id_for  # noqa: E402
from sampling.comic.book import make_comic  # noqa: E402
from sampling.comic.script import load_script  # noqa: E402
from sampling.loading import load_models  # noqa: E402
from sampling.pipeline import TextToImage  # noqa: E402
from sampling.settings import SamplerSettings  # noqa: E402

NAME, SHAPE, COLOR = "zorp", "star", "purple"
NEW_PROMPT = "zorp on a cyan background"
PAGE_CAPTIONS = (
    "zorp on a cyan background",
    "a small zorp in the top left on a white background",
    "a large zorp on a pink background",
    "zorp at the bottom right on a gray background",
    "a zorp in the center on a cyan background",
    "a small zorp on a white background",
)
PARTS = ("new", "page", "ordinary")
TARGETS = {"new_with": 0.90, "new_without": 0.05, "page": 0.90, "ordinary_drop": 0.03}
CPU = torch.device("cpu")


def bundled_world() -> World:
    provenance = json.loads((bundled_model_path("base") / "provenance.json").read_text())
    return World.from_dict(provenance["world"])


def reading_world(world: World) -> World:
    """The bundled world plus the star, so the evaluator can tell zorp (and a star leaking into other captions)."""
    return World(**{**world.to_dict(), "shapes": tuple(world.shapes) + (SHAPE,)})


# --- teaching ----------------------------------------------------------------------------------------------------


def render_character(folder: Path, world: World, count: int, size: int) -> Path:
    """`count` purple stars captioned with 'zorp' for 'purple star' (imagefolder): backgrounds and sizes taken in
    turn (as a user would pick a varied handful), position and phrasing drawn at random."""
    combos = [(bg, sz) for sz in world.sizes for bg in world.backgrounds]
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        background, star_size = combos[i % len(combos)]
        only = {"shapes": (SHAPE,), "colors": (COLOR,), "backgrounds": (background,), "sizes": (star_size,)}
        rng = sample_rng(7, i)
        attributes = sample_attributes(World(**{**world.to_dict(), **only}), rng)
        caption = make_caption(attributes, rng, name_size=len(world.sizes) > 1)
        Image.fromarray(render(attributes, size)).save(folder / f"zorp-{i:03d}.png")
        rows.append({"file_name": f"zorp-{i:03d}.png", "text": caption.replace(f"{COLOR} {SHAPE}", NAME)})
    atomic_write_text(folder / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return folder


def teach_zorp(args, world: World) -> tuple[Path, dict]:
    """The zorp adapter (taught once, reused) and what teaching it took."""
    adapter, record = args.results / "zorp-adapter", args.results / "teach.json"
    names = (
        "steps",
        "rank",
        "prior_images",
        "lr",
        "batch_size",
        "teach_images",
        "character_share",
        "prior_guidance",
        "uncond_p",
    )
    # recorded only when not the default, so adapters taught before the option existed stay reusable
    extra = {k: getattr(args, k) for k in ("uncond_images", "prior_target") if getattr(args, k) != TEACH_DEFAULTS[k]}
    settings = {k: getattr(args, k) for k in names}
    settings["targets"] = args.targets
    settings.update(extra)
    settings["character_images"] = "backgrounds and sizes in turn"  # how render_character picks them
    if record.is_file() and adapter.is_dir() and json.loads(record.read_text()).get("settings") == settings:
        return adapter, json.loads(record.read_text())
    images = render_character(args.results / "zorp-images", world, args.teach_images, 32)
    parser = argparse.ArgumentParser()
    add_teach_arguments(parser)
    argv = ["--name", NAME, "--images", str(images), "--out", str(adapter), "--steps", str(args.steps)]
    argv += ["--rank", str(args.rank), "--prior-images", str(args.prior_images), "--lr", str(args.lr)]
    argv += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    argv += ["--character-share", str(args.character_share), "--prior-guidance", str(args.prior_guidance)]
    argv += ["--uncond-p", str(args.uncond_p), "--uncond-images", args.uncond_images]
    argv += ["--prior-target", args.prior_target]
    argv += ["--prior-dir", str(args.results / "prior-images")]  # kept: other teach settings reuse them
    argv += ["--targets", args.targets] if args.targets else []
    print(f"teaching {NAME}: python -m finetune adapter teach {' '.join(argv)}", flush=True)
    # the threads teaching ran with (a later report run may use other ones)
    report = {
        "settings": settings,
        "threads": args.threads or torch.get_num_threads(),
        **teach(parser.parse_args(argv)),
    }
    atomic_write_json(record, report)
    return adapter, report


# --- measuring ---------------------------------------------------------------------------------------------------


class Sampler:
    """The bundled base with the bench's sampler settings, the zorp adapter switched on and off."""

    def __init__(self, args, adapter: Path, world: World):
        self.args, self.adapter, self.world = args, adapter, world
        self.models = load_models("bundled", CPU, use_upsampler=False)
        self.base = self.models.base
        self.setting = {
            "sampler": args.sampler,
            "steps": args.sampler_steps,
            "guidance": args.guidance,
            "precision": "fp32",
            "seed": args.seed,
            "suffix": "",
        }
        self.adapter_id = model_id_for(adapter) + (f"x{args.scale:g}" if args.scale != 1.0 else "")

    def use_adapter(self, on: bool) -> None:
        adapters = [(self.adapter, self.args.scale)] if on else []
        apply_adapters(self.base.model, adapters, base_model_id=self.base.model_id, fuse=True)  # as sampling does

    def reads(self, part: str, on: bool, prompt_at) -> list[dict]:
        """Reads of images 0..n-1 (prompt `prompt_at(i)`, seed + i), with the adapter on or off; cached in chunks
        so a rerun with more samples only draws the new ones."""
        key = f"{self.base.model_id}+{self.adapter_id if on else 'none'}-{part}"
        cache = quality.Cache(self.args.results / "reads", key, {**self.setting, "part": part}, self.args.chunk)
        reads: list[dict] = []
        for start in range(0, self.args.samples, self.args.chunk):
            stop = min(start + self.args.chunk, self.args.samples)
            cached = cache.load(start)
            if cached is None or len(cached) < stop - start:
                cached = self._draw(on, [prompt_at(i) for i in range(start, stop)], start)
                cache.store(start, cached)
            reads.extend(cached[: stop - start])
        return reads

    def _draw(self, on: bool, prompts: list[str], start: int) -> list[dict]:
        seeds = [self.args.seed + start + i for i in range(len(prompts))]
        t0 = time.perf_counter()
        self.use_adapter(on)
        try:
            reads = quality.generate_reads(self.base, self.setting, prompts, seeds, self.args.batch_size, self.world)
        finally:
            self.use_adapter(False)
        print(
            f"  adapter {'on ' if on else 'off'} images {start}-{start + len(prompts) - 1}: "
            f"{time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        return reads


def is_zorp(read: dict) -> bool:
    return read.get("shape") == SHAPE and read.get("color") == COLOR


def rate(flags) -> dict:
    flags = [bool(f) for f in flags]
    p = float(np.mean(flags)) if flags else float("nan")
    return {"n": len(flags), "rate": p, "ci95": 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / max(len(flags), 1))}


def new_character_part(sampler: Sampler) -> dict:
    with_adapter = sampler.reads("new", True, lambda i: NEW_PROMPT)
    without = sampler.reads("new", False, lambda i: NEW_PROMPT)
    return {"with": rate(map(is_zorp, with_adapter)), "without": rate(map(is_zorp, without)), "prompt": NEW_PROMPT}


def comic_script(folder: Path, adapter: Path, pages: int, scale: float = 1.0) -> Path:
    """A script with zorp in its cast (the adapter applied by the comic code at `scale`) and `pages` pages of 6
    panels."""
    panel_pages = [{"layout": "2x3", "panels": list(PAGE_CAPTIONS)} for _ in range(pages)]
    script = {
        "title": "zorp bench",
        "seed": 11,
        "cast": {NAME: {"adapter": f"{adapter}:{scale:g}"}},
        "pages": panel_pages,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "zorp.yaml"
    atomic_write_text(path, yaml.safe_dump(script, sort_keys=False))
    return path


def page_part(sampler: Sampler, adapter: Path) -> dict:
    """Comic pages of 6 zorp panels (at least n panels): the share of panels that draw zorp, and of pages where
    every panel does."""
    pages = math.ceil(sampler.args.samples / len(PAGE_CAPTIONS))
    out = sampler.args.results / "comic" / sampler.adapter_id.replace("@", "-")  # one comic folder per adapter
    script = load_script(comic_script(out, adapter, pages, sampler.args.scale))
    # without subject placement, as the cached reads of every run so far: this bench reads shape, colour and background
    settings = SamplerSettings(sampler.args.sampler, sampler.args.sampler_steps, sampler.args.guidance, placement=False)
    pipeline = TextToImage(sampler.models, CPU, base=settings)
    t0 = time.perf_counter()
    result = make_comic(script, pipeline, out / "pages", batch_size=sampler.args.batch_size, progress=False)
    print(f"  comic: {len(result.generated)} panels drawn in {time.perf_counter() - t0:.0f}s", flush=True)
    per_page = [
        [is_zorp(read_panel(result.panels[(p, q)], sampler.world)) for q in range(1, 7)] for p in range(1, pages + 1)
    ]
    return {
        "panels": rate(flag for page in per_page for flag in page),
        "pages_all_zorp": rate(all(page) for page in per_page),
        "panels_per_page": len(PAGE_CAPTIONS),
    }


def read_panel(path: Path, world: World) -> dict:
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    side = min(rgb.shape[:2])  # the evaluator reads square images; grid cells are drawn square
    return read_scene(np.ascontiguousarray(rgb[:side, :side]), world)


def ordinary_part(sampler: Sampler, world: World) -> dict:
    """Caption accuracy on ordinary captions of `world` (the bundled one), adapter on vs off on paired seeds."""
    targets, prompts = quality.make_targets(world, sampler.args.samples, sampler.args.prompt_seed)
    on = sampler.reads("ordinary", True, prompts.__getitem__)
    off = sampler.reads("ordinary", False, prompts.__getitem__)
    diff, half = quality.paired_difference(on, off, targets)
    return {
        "with": quality.summarise(on, targets),
        "without": quality.summarise(off, targets),
        "difference": diff,
        "difference_ci95": half,
        "star_leak_with": rate(r.get("shape") == SHAPE for r in on),
    }


# --- report ------------------------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


PRIOR_TARGET_WORDS = {"base": "the base model's prediction", "noise": "their noise"}


def report_text(args, taught: dict, new: dict, page: dict, ordinary: dict, argv: list[str]) -> str:
    drop = -ordinary["difference"]
    rows = [
        ("new character: zorp drawn, adapter on", new["with"], new["with"]["rate"] >= TARGETS["new_with"], "≥ 90%"),
        (
            "new character: zorp drawn, adapter off",
            new["without"],
            new["without"]["rate"] <= TARGETS["new_without"],
            "≤ 5%",
        ),
        ("comic pages: panels that draw zorp", page["panels"], page["panels"]["rate"] >= TARGETS["page"], "≥ 90%"),
        ("comic pages: pages where every panel is zorp", page["pages_all_zorp"], None, ""),
        (
            "ordinary captions: accuracy, adapter off",
            {
                "n": ordinary["without"]["n"],
                "rate": ordinary["without"]["all_three"],
                "ci95": ordinary["without"]["ci95"],
            },
            None,
            "",
        ),
        (
            "ordinary captions: accuracy, adapter on",
            {"n": ordinary["with"]["n"], "rate": ordinary["with"]["all_three"], "ci95": ordinary["with"]["ci95"]},
            None,
            "",
        ),
        ("ordinary captions: a star drawn, adapter on", ordinary["star_leak_with"], None, ""),
    ]
    lines = ["| measure | n | rate (±95%) | target |", "|---|---|---|---|"]
    for label, r, ok, target in rows:
        goal = f"{target} ({verdict(ok)})" if ok is not None else ""
        lines.append(f"| {label} | {r['n']} | {pct(r['rate'])} ± {100 * r['ci95']:.1f} | {goal} |")
    lines.append(
        f"| ordinary captions: accuracy drop (paired) | {ordinary['with']['n']} | {100 * drop:+.1f} points ± "
        f"{100 * ordinary['difference_ci95']:.1f} | ≤ 3 points ({verdict(drop <= TARGETS['ordinary_drop'])}) |"
    )
    s = taught["settings"]
    return (
        f"## Character adapter benchmark\n\nzorp = a {COLOR} {SHAPE} (a shape the bundled base never saw), taught "
        f"from {taught['images']} rendered images and {taught['prior_images']} prior-preservation images with "
        f"`python -m finetune adapter teach` (rank {s['rank']}, {s['steps']} steps, batch {s['batch_size']}, "
        f"lr {s['lr']:g}, character share {s['character_share']}, prior guidance {s['prior_guidance']:g}, "
        f"prior images trained towards {PRIOR_TARGET_WORDS[args.prior_target]}, "
        f"targets {s['targets'] or 'the default'}), applied at scale {args.scale:g}. {args.samples} samples per point, "
        f"{args.sampler} {args.sampler_steps} steps, guidance {args.guidance:g}, fp32, paired seeds.\n\n"
        + "\n".join(lines)
        + f"\n\nAdapter size {taught['adapter_bytes'] / 1e6:.2f} MB; teaching took {taught['prior_seconds']:.0f}s "
        f"for the prior images and {taught['train_seconds']:.0f}s of training on this CPU "
        f"({taught.get('threads', 'unrecorded')} thread(s)).\n\nCommand: `python bench/adapters.py "
        f"{' '.join(argv)}`\n"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500, help="images per point (default: 500)")
    parser.add_argument("--teach-images", type=int, default=20, help="rendered zorp images (default: 20)")
    parser.add_argument("--steps", type=int, default=TEACH_DEFAULTS["steps"], help="teaching steps")
    parser.add_argument("--rank", type=int, default=TEACH_DEFAULTS["rank"], help="LoRA rank")
    parser.add_argument("--prior-images", type=int, default=TEACH_DEFAULTS["prior_images"])
    parser.add_argument("--lr", type=float, default=TEACH_DEFAULTS["lr"])
    parser.add_argument("--targets", default=TEACH_DEFAULTS["targets"], help="LoRA targets (default: teach's)")
    parser.add_argument("--character-share", type=float, default=TEACH_DEFAULTS["character_share"])
    parser.add_argument("--uncond-p", type=float, default=TEACH_DEFAULTS["uncond_p"])
    parser.add_argument("--uncond-images", default=TEACH_DEFAULTS["uncond_images"], choices=("all", "prior"))
    parser.add_argument("--prior-target", default=TEACH_DEFAULTS["prior_target"], choices=("noise", "base"))
    parser.add_argument(
        "--prior-guidance", type=float, default=None, help="guidance of the prior images (default: --guidance)"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="the adapter's scale when on, as --adapter PATH:SCALE (default: 1)"
    )
    parser.add_argument("--sampler", default="dpmpp_2m_sde", help="default: dpmpp_2m_sde")
    parser.add_argument("--sampler-steps", type=int, default=20, help="default: 20")
    parser.add_argument("--guidance", type=float, default=5.0, help="default: 5 (the bundled base's best)")
    parser.add_argument("--batch-size", type=int, default=TEACH_DEFAULTS["batch_size"], help="sampling and training")
    parser.add_argument("--chunk", type=int, default=50, help="images per cached chunk (default: 50)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of image 0 (image i uses seed+i)")
    parser.add_argument("--prompt-seed", type=int, default=12345, help="seed of the ordinary captions")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="which measurements to draw (default: all, and write the report); a subset only fills the image cache, "
        "e.g. to share the work between two processes on the same --results",
    )
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "adapters", help="cache folder")
    parser.add_argument("--report-dir", type=Path, default=REPO / "docs" / "quality", help="adapters.md/.json here")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.prior_guidance is None:
        args.prior_guidance = args.guidance
    if args.samples < 1 or args.chunk < 1 or args.batch_size < 1:
        raise SystemExit("--samples, --chunk and --batch-size must be positive")
    if not 0.0 < args.scale <= 10.0:
        raise SystemExit(f"--scale must be in (0, 10], got {args.scale}")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.results.mkdir(parents=True, exist_ok=True)
    world = bundled_world()
    adapter, taught = teach_zorp(args, world)
    print(f"adapter {adapter}: {taught}", flush=True)
    sampler = Sampler(args, adapter, reading_world(world))
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - set(PARTS):
        raise SystemExit(f"--parts: choose from {', '.join(PARTS)}")
    new = new_character_part(sampler) if "new" in parts else None
    page = page_part(sampler, adapter) if "page" in parts else None
    ordinary = ordinary_part(sampler, world) if "ordinary" in parts else None
    if parts != set(PARTS):
        print("images cached; run all parts (the default) for the report", flush=True)
        return 0
    report = {
        "samples": args.samples,
        "scale": args.scale,
        "teach": taught,
        "new": new,
        "page": page,
        "ordinary": ordinary,
        "targets": TARGETS,
        "command": "python bench/adapters.py " + " ".join(argv),
    }
    text = report_text(args, taught, new, page, ordinary, argv)
    print("\n" + text)
    args.report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.report_dir / "adapters.md", text)
    atomic_write_json(args.report_dir / "adapters.json", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
