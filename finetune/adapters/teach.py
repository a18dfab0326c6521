"""`python -m finetune adapter teach --name NAME --images DIR --out ADAPTER_DIR`: teach a model a new character.

A recipe over `python -m finetune train --adapter lora`:
1. the user's images, captioned by the caption file in DIR when it has one (imagefolder metadata.jsonl or a CSV,
   as `python -m data_pipeline folder` reads them), else each captioned with the name (and --description);
2. prior-preservation images: what the base model itself draws for ordinary captions (--prior-prompts, or captions
   of the synthetic world the base records in its provenance), so training on the new name does not make the
   model forget the rest of its vocabulary (DreamBooth's prior preservation); by default trained towards the
   frozen base's own prediction for them rather than their noise (--prior-target), a target without noise;
3. both written as WebDataset shards by data_pipeline's folder source, at the model's image size;
4. a LoRA adapter trained on them on the frozen base, left at --out (an adapter folder naming its base).
Work files (the staged images, shards and the training run) go to --work-dir, kept for inspection; by default a
folder beside --out that is removed when the adapter is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from data_pipeline import __main__ as data_main
from data_pipeline.commands import build_parser
from data_pipeline.fsutil import atomic_write_text, publish_dir
from data_pipeline.sources.folder import IMAGE_EXTENSIONS, FolderError, find_caption_file, read_folder_items
from finetune.diffusion import defaults

from .errors import AdapterError
from .format import CONFIG_FILE, read_adapter_config
from .model_names import resolve_model_folder
from .prior import PriorFolder, file_captions, prior_images, world_captions
from .settings import KNOWN_TARGETS

DESCRIPTION = __doc__
FORMATTER = argparse.RawDescriptionHelpFormatter
MAX_IMAGES = 1_000
UNCOND_IMAGES = ("all", "prior")
PRIOR_TARGETS = ("noise", "base")
MAX_NAME_CHARS = 64
# The setting bench/adapters.py measured to teach a new shape without costing the rest of the vocabulary
# (docs/quality/adapters.md): a quarter of the samples show the character, the rest are the base model's own images of
# ordinary captions, trained towards the base's own prediction for them (their noise as the target lost 3.8 points
# of ordinary accuracy, the base's 1.6), for 1,400 steps at lr 1e-3 on every wrappable layer including the residual
# convolutions. A larger character share learns faster but bleeds into ordinary captions (a half: 8 points lost), a
# smaller one learns the character too slowly.
DEFAULTS = {
    "character_share": 0.25,
    "prior_guidance": defaults.GUIDANCE,
    "uncond_p": 0.2,
    "uncond_images": "all",
    "prior_target": "base",
    "steps": 1400,
    "rank": 8,
    "prior_images": 240,
    "batch_size": 8,
    "lr": 1e-3,
    "seed": 0,
    "targets": ",".join(KNOWN_TARGETS),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="the new word, e.g. zorp (what captions will call it)")
    parser.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder with its images")
    parser.add_argument("--out", required=True, type=Path, metavar="ADAPTER_DIR", help="the adapter folder to write")
    parser.add_argument("--base", default="bundled", help="model folder or name to adapt (default: bundled)")
    parser.add_argument("--description", default="", help="added after the name in generated captions")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"], help="training steps (default: %(default)s)")
    parser.add_argument("--rank", type=int, default=DEFAULTS["rank"], help="LoRA rank (default: %(default)s)")
    parser.add_argument(
        "--prior-images",
        type=int,
        default=DEFAULTS["prior_images"],
        metavar="N",
        help="base-model images of ordinary captions trained alongside (0: none; default: %(default)s)",
    )
    parser.add_argument("--prior-prompts", type=Path, metavar="FILE", help="ordinary captions, one per line")
    parser.add_argument(
        "--prior-guidance",
        type=float,
        default=DEFAULTS["prior_guidance"],
        help="guidance scale the prior images are drawn with: the base model's best (bundled: 5; default: %(default)s)",
    )
    parser.add_argument(
        "--prior-dir",
        type=Path,
        metavar="DIR",
        help="keep the prior images here and reuse them in later runs with the same base, captions, seed and "
        "guidance (default: drawn afresh each run)",
    )
    parser.add_argument(
        "--character-share",
        type=float,
        default=DEFAULTS["character_share"],
        metavar="F",
        help="share of training samples that show the character; its images are repeated to reach it when the "
        "prior images outnumber them (a half, as in DreamBooth, bled into ordinary captions here; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--targets",
        default=DEFAULTS["targets"],
        help="layers the adapter wraps, comma-separated (default: every layer adapters can wrap: %(default)s)",
    )
    parser.add_argument(
        "--uncond-p",
        type=float,
        default=DEFAULTS["uncond_p"],
        help="share of training captions replaced by the empty one (classifier-free guidance dropout; 0 keeps the "
        "character out of the unconditional model; default: %(default)s)",
    )
    parser.add_argument(
        "--uncond-images",
        choices=UNCOND_IMAGES,
        default=DEFAULTS["uncond_images"],
        help="which images the empty captions go with: 'all' (the trainer drops --uncond-p of every caption) or "
        "'prior' (the character's captions are never dropped, the prior images' more often, so that --uncond-p of "
        "all samples stay unconditional and the unconditional model stays the base's; default: %(default)s)",
    )
    parser.add_argument(
        "--prior-target",
        choices=PRIOR_TARGETS,
        default=DEFAULTS["prior_target"],
        help="what the prior images train towards: 'noise' (their own, as DreamBooth) or 'base' (the base model's "
        "prediction for the same noisy image: the adapter learns to leave ordinary captions as the base draws them; "
        "a third more time per step; default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="default: %(default)s")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for training (0: torch's default)")
    parser.add_argument("--work-dir", type=Path, help="keep the staged images, shards and training run here")


def check_arguments(args: argparse.Namespace) -> None:
    name = args.name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name[0].isalpha():
        raise AdapterError(f"--name {args.name!r} must be 1-{MAX_NAME_CHARS} characters starting with a letter")
    for flag, value, low in (
        ("--steps", args.steps, 1),
        ("--rank", args.rank, 1),
        ("--batch-size", args.batch_size, 1),
    ):
        if value < low:
            raise AdapterError(f"{flag} must be at least {low}, got {value}")
    if not 0.0 < args.character_share <= 1.0:
        raise AdapterError(f"--character-share must be in (0, 1], got {args.character_share}")
    if not 0.0 <= args.uncond_p < 1.0:
        raise AdapterError(f"--uncond-p must be in [0, 1), got {args.uncond_p}")
    if not 0.0 <= args.prior_guidance <= 100.0:
        raise AdapterError(f"--prior-guidance must be between 0 and 100, got {args.prior_guidance}")
    if not 0 <= args.prior_images <= 10_000:
        raise AdapterError(f"--prior-images must be between 0 and 10000, got {args.prior_images}")
    if not args.images.is_dir():
        raise AdapterError(f"--images {args.images}: not a folder")
    if args.out.exists() and not (args.out / CONFIG_FILE).is_file():
        raise AdapterError(f"--out {args.out} exists and is not an adapter folder; refusing to overwrite it")


def character_items(images: Path, name: str, description: str) -> list[dict]:
    """[{file: absolute path, caption}] of the user's images: the folder's captions, else the name."""
    try:
        find_caption_file(str(images))
        has_captions = True
    except FolderError:
        has_captions = False
    if has_captions:
        items = [{"file": images / i["file"], "caption": i["captions"][0]} for i in read_folder_items(str(images))]
    else:
        caption = f"{name}, {description}" if description else name
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        items = [{"file": p, "caption": caption} for p in files]
    if not items:
        raise AdapterError(f"--images {images}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    if len(items) > MAX_IMAGES:
        raise AdapterError(f"--images {images}: {len(items)} images; at most {MAX_IMAGES}")
    return items


def character_repeats(characters: int, priors: int, share: float) -> int:
    """How many times each character image is staged so that they make up about `share` of the training samples
    (at least once; the trainer draws samples uniformly from the shards)."""
    if priors == 0 or share >= 1.0:
        return 1
    return max(1, round(share / (1.0 - share) * priors / characters))


def stage_character(items: list[dict], staging: Path, repeats: int = 1, keep_caption: bool = False) -> list[dict]:
    """Copy the user's images into the staging folder as PNGs; rows for its metadata.jsonl (each image listed
    `repeats` times, under one file per repeat: the folder source reads one sample per file). `keep_caption`: the
    trainer never drops their captions (the attribute `caption_dropout: off`)."""
    extra = {"caption_dropout": "off"} if keep_caption else {}
    rows = []
    for i, item in enumerate(items):
        try:
            with Image.open(item["file"]) as image:
                image.convert("RGB").save(staging / f"character-{i:04d}.png")
        except (OSError, UnidentifiedImageError) as exc:
            raise AdapterError(f"{item['file']}: not a readable image ({exc})") from None
        rows.append({"file_name": f"character-{i:04d}.png", "text": item["caption"], **extra})
        for r in range(1, repeats):
            shutil.copyfile(staging / f"character-{i:04d}.png", staging / f"character-{i:04d}-{r:03d}.png")
            rows.append({"file_name": f"character-{i:04d}-{r:03d}.png", "text": item["caption"], **extra})
    return rows


def prior_uncond_p(uncond_p: float, character_share: float) -> float:
    """The caption-dropout rate of the prior images alone that keeps `uncond_p` of all samples unconditional when
    the character's captions (`character_share` of the samples) are never dropped (capped below 1)."""
    return min(0.95, uncond_p / max(1e-6, 1.0 - character_share))


def prior_prompts(args: argparse.Namespace, base: Path) -> list[str]:
    if args.prior_images == 0:
        return []
    if args.prior_prompts is not None:
        return file_captions(args.prior_prompts, args.prior_images)
    captions = world_captions(base, args.prior_images, args.seed)
    if captions is None:
        raise AdapterError(
            f"{base} records no synthetic world to draw ordinary captions from; give --prior-prompts FILE "
            "(one caption per line) or --prior-images 0"
        )
    return captions


def stage_prior(args: argparse.Namespace, base: Path, size: int, prompts: list[str], staging: Path) -> list[dict]:
    """The base model's images (`size` px) for `prompts` (reused from --prior-dir where drawn before), saved into
    the staging folder; rows for its metadata.jsonl."""
    if not prompts:
        return []
    from finetune.model_folder import load_model_folder  # lazy: loads torch and the model core
    from finetune.model_id import folder_model_id

    folder = PriorFolder(args.prior_dir, folder_model_id(base), args.prior_guidance, size) if args.prior_dir else None
    images = prior_images(lambda: load_model_folder(base), prompts, args.seed, args.prior_guidance, folder)
    rows = []
    for i, (prompt, image) in enumerate(zip(prompts, images)):
        Image.fromarray(image).save(staging / f"prior-{i:05d}.png")
        rows.append({"file_name": f"prior-{i:05d}.png", "text": prompt, "prior_preservation": "on"})
    return rows


def run_subcommand(module, argv: list[str]) -> None:
    """Run one subcommand of another entry point in this process; its UserErrors reach our caller unchanged."""
    try:
        args = build_parser(module.PROG, "", module.COMMANDS, argv).parse_args(argv)
    except SystemExit as exc:  # argparse printed why
        raise AdapterError(f"{module.PROG} {argv[0]} refused its arguments (exit status {exc.code})") from None
    status = int(args._run(args) or 0)
    if status:
        raise AdapterError(f"{module.PROG} {' '.join(argv[:1])} failed (exit status {status})")


def build_shards(staging: Path, data: Path, size: int) -> None:
    argv = ["folder", str(staging), "--out", str(data), "--sizes", str(size), "--image-format", "png"]
    run_subcommand(data_main, argv + ["--processes", "1", "--no-progress"])


def train_adapter(args: argparse.Namespace, base: Path, data: Path, run_dir: Path, uncond_p: float) -> Path:
    """`python -m finetune train --adapter lora` on the staged shards; the adapter folder it exports."""
    from finetune import __main__ as finetune_main  # lazy: the entry point module that lists `train`

    argv = ["train", "--init", str(base), "--data", str(data), "--run-dir", str(run_dir)]
    argv += ["--adapter", "lora", "--lora-rank", str(args.rank), "--max-steps", str(args.steps)]
    argv += ["--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed)]
    argv += ["--uncond-p", str(uncond_p), "--prior-target", args.prior_target]
    argv += ["--threads", str(args.threads), "--num-workers", "0", "--val-samples", "0", "--lr-warmup-steps", "0"]
    # Whole images (a crop would move the character off the positions its captions name); no grids or
    # checkpoints in a short run.
    argv += ["--crop-scale-min", "1.0", "--sample-every", "-1", "--checkpoint-every", "-1", "--no-progress"]
    if args.targets:
        argv += ["--lora-targets", args.targets]
    run_subcommand(finetune_main, argv)
    adapter = run_dir / "adapter"
    read_adapter_config(adapter)  # the trainer wrote a whole adapter folder
    return adapter


def publish_adapter(adapter: Path, out: Path) -> None:
    """Copy the trained adapter folder to `out` atomically (an adapter folder there is replaced)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        tmp.chmod(0o755)
        for file in adapter.iterdir():
            shutil.copy2(file, tmp / file.name)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def teach(args: argparse.Namespace) -> dict:
    """Everything `run` does; returns what it measured (seconds per phase, image counts, adapter bytes)."""
    check_arguments(args)
    base = resolve_model_folder(args.base)
    size = int(json.loads((base / "config.json").read_text(encoding="utf-8"))["options"]["image_size"])
    items = character_items(args.images, args.name.strip(), args.description.strip())
    prompts = prior_prompts(args, base)
    keep = args.work_dir is not None
    work = args.work_dir or Path(tempfile.mkdtemp(dir=args.out.parent, prefix=f".{args.out.name}.teach-"))
    try:
        staging, data, run_dir = work / "images", work / "data", work / "run"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
        staging.mkdir(parents=True)
        started = time.perf_counter()
        repeats = character_repeats(len(items), len(prompts), args.character_share)
        rows = stage_character(items, staging, repeats, keep_caption=args.uncond_images == "prior")
        share = len(rows) / (len(rows) + len(prompts))  # of the staged samples, the character's
        rows += stage_prior(args, base, size, prompts, staging)
        uncond_p = args.uncond_p if args.uncond_images == "all" else prior_uncond_p(args.uncond_p, share)
        prior_seconds = time.perf_counter() - started
        atomic_write_text(staging / "metadata.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        build_shards(staging, data, size)
        started = time.perf_counter()
        adapter = train_adapter(args, base, data, run_dir, uncond_p)
        train_seconds = time.perf_counter() - started
        publish_adapter(adapter, args.out)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    adapter_bytes = sum(f.stat().st_size for f in args.out.iterdir())
    return {
        "images": len(items),
        "prior_images": len(prompts),
        "prior_seconds": round(prior_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "adapter_bytes": adapter_bytes,
    }


def run(args: argparse.Namespace) -> int:
    report = teach(args)
    print(
        f"taught {args.name!r} from {report['images']} image(s) and {report['prior_images']} prior image(s) in "
        f"{report['train_seconds']:.0f}s of training: adapter {args.out} ({report['adapter_bytes'] / 1e6:.2f} MB)"
    )
    return 0
