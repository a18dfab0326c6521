"""Reproduce the bundled models: build the dataset, train (or resume) the base and the upsampler, export the newest
EMA weights into finetune/bundled_weights/ in fp16. Two pipelines: `shapes` (the synthetic world; the default) and
`emoji` (OpenMoji scenes; recipe in scripts/bundled/emoji/, weights in finetune/bundled_weights/emoji/).

    python scripts/bundled/train_bundled.py [--pipeline emoji] data    --root DIR [--count N]
    python scripts/bundled/train_bundled.py [--pipeline emoji] train   base|upsampler --root DIR [--max-steps N]
    python scripts/bundled/train_bundled.py [--pipeline emoji] export  [base|upsampler ...] --root DIR [--to DIR]
    python scripts/bundled/train_bundled.py [--pipeline emoji] status  --root DIR

Everything large (dataset, run folders with optimizer state) lives under --root, outside the git tree. A training
run resumes from its newest checkpoint; when its run folder is gone (a new machine), it starts a new run from the
committed bundled weights (the optimizer state, LR warmup and step counter restart; the steps already behind the
bundled weights are carried in `lineage.json` and in the exported provenance).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KINDS = ("base", "upsampler")
DATASET_NAME = "shapes-plain"


@dataclass(frozen=True)
class Pipeline:
    """Where one bundled pipeline's recipe, dataset, runs and exported weights live."""

    recipe: Path  # world.json, <kind>_model.json, <kind>_train.yaml
    dataset_name: str  # ROOT/data/<dataset_name>
    run_prefix: str  # ROOT/<run_prefix>-<kind>
    weights_subdir: str  # finetune/bundled_weights/<weights_subdir>/<kind> ("" = bundled_weights/<kind>)
    subcommand: str  # the data_pipeline command that builds the dataset
    flags: dict  # world.json key -> that command's flag
    trim_vocab: bool = False  # export keeps only the tokens of the dataset's captions (finetune.vocab_trim)


COMMON_FLAGS = {
    "count": "--count",
    "seed": "--seed",
    "image_sizes": "--sizes",
    "image_format": "--image-format",
    "style": "--style",
    "backgrounds": "--backgrounds",
    "val_fraction": "--val-fraction",
    "shard_size": "--shard-size",
}
PIPELINES = {
    "shapes": Pipeline(
        HERE, DATASET_NAME, "bundled", "", "synthetic", {**COMMON_FLAGS, "shapes": "--shapes", "colors": "--colors"}
    ),
    "emoji": Pipeline(
        HERE / "emoji",
        "emoji-plain",
        "bundled-emoji",
        "emoji",
        "emoji-scenes",
        {**COMMON_FLAGS, "emoji": "--emoji", "emoji_sizes": "--emoji-sizes", "pair_p": "--pair-p"},
        # half of each model file is the token embedding of 49,408 CLIP tokens, of which its captions use ~120:
        # untrimmed, a second pair would not fit the repository's size budget
        trim_vocab=True,
    ),
}
DEFAULT_PIPELINE = "shapes"


def bundled_dir(kind: str, pipeline: str = DEFAULT_PIPELINE) -> Path:
    sub = PIPELINES[pipeline].weights_subdir
    return REPO / "finetune" / "bundled_weights" / sub / kind if sub else REPO / "finetune" / "bundled_weights" / kind


def run_dir(root: Path, kind: str, pipeline: str = DEFAULT_PIPELINE) -> Path:
    return root / f"{PIPELINES[pipeline].run_prefix}-{kind}"


def dataset_dir(root: Path, pipeline: str = DEFAULT_PIPELINE) -> Path:
    return root / "data" / PIPELINES[pipeline].dataset_name


def recipe_file(name: str, pipeline: str = DEFAULT_PIPELINE) -> Path:
    return PIPELINES[pipeline].recipe / name


def read_json(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def write_json_atomic(path: Path, data: dict) -> None:
    from data_pipeline.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


# --- dataset -----------------------------------------------------------------------------------------------------


def dataset_command(root: Path, processes: int, pipeline: str, count: int | None = None) -> list[str]:
    """The data_pipeline command line that builds (or finishes) the pipeline's dataset from its world.json."""
    spec = PIPELINES[pipeline]
    world = {**read_json(recipe_file("world.json", pipeline)), **({"count": count} if count else {})}
    cmd = [sys.executable, "-m", "data_pipeline", spec.subcommand, "--out", str(dataset_dir(root, pipeline))]
    cmd += ["--no-progress", "--processes", str(processes)]
    for key, flag in spec.flags.items():
        if key in world:
            cmd += [flag, str(world[key])]
    return cmd


def build_dataset(root: Path, processes: int, pipeline: str = DEFAULT_PIPELINE, count: int | None = None) -> Path:
    """Build (or finish) the dataset described by world.json (`count` overrides its size); a complete one is left
    alone."""
    out = dataset_dir(root, pipeline)
    wanted = count or read_json(recipe_file("world.json", pipeline))["count"]
    manifest = out / "manifest.json"
    if manifest.is_file():
        totals = json.loads(manifest.read_text()).get("totals", {})
        if totals.get("samples", totals.get("written", 0)) >= wanted:
            return out
    cmd = dataset_command(root, processes, pipeline, count)
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return out


# --- training ----------------------------------------------------------------------------------------------------


def init_dir(root: Path, kind: str, pipeline: str, suffix: str = "") -> Path:
    """ROOT/init/<kind><suffix> for the shapes pipeline, ROOT/init/<pipeline>-<kind><suffix> for the others."""
    return root / "init" / (f"{kind}{suffix}" if pipeline == DEFAULT_PIPELINE else f"{pipeline}-{kind}{suffix}")


def make_scratch_init(root: Path, kind: str, seed: int = 0, pipeline: str = DEFAULT_PIPELINE) -> Path:
    """A model folder with freshly initialised weights for the architecture in <kind>_model.json."""
    import torch

    from finetune.model import build_model
    from finetune.model_folder import save_model_folder
    from finetune.tokenizers import get_tokenizer

    path = init_dir(root, kind, pipeline)
    architecture = recipe_file(f"{kind}_model.json", pipeline)
    options = read_json(architecture)
    if (path / "config.json").is_file():
        saved = json.loads((path / "config.json").read_text())["options"]
        if all(saved.get(k) == v for k, v in options.items()):
            return path
    torch.manual_seed(seed)
    model = build_model(options)
    tokenizer = get_tokenizer(options["tokenizer"], options["text_ctx"])
    save_model_folder(
        path,
        model,
        model.options,
        tokenizer,  # swapped in whole, replacing a stale one
        provenance={"init": "scratch", "seed": seed, "architecture": str(architecture.relative_to(REPO))},
    )
    return path


def architecture_changed(kind: str, pipeline: str = DEFAULT_PIPELINE) -> bool:
    """Whether <kind>_model.json asks for options the committed bundled weights were not built with."""
    saved = json.loads((bundled_dir(kind, pipeline) / "config.json").read_text()).get("options")
    if not saved:  # no architecture recorded: nothing to compare against
        return False
    from finetune.model import resolve_options

    saved = resolve_options(saved)  # options newer than the weights take their defaults (e.g. coord_channels off)
    wanted = read_json(recipe_file(f"{kind}_model.json", pipeline))
    return any(saved.get(k) != v for k, v in wanted.items())


def make_grown_init(root: Path, kind: str, pipeline: str = DEFAULT_PIPELINE) -> Path:
    """A model folder with <kind>_model.json's architecture and the bundled weights carried over.

    Used when the architecture gains input channels (e.g. coordinate channels): they start at zero, so the grown
    model draws exactly what the bundled one did until training teaches it to use them."""
    from finetune.model import build_model, resolve_options
    from finetune.model_folder import load_model_folder, save_model_folder
    from finetune.train.model_init import transfer_weights

    bundled = bundled_dir(kind, pipeline)
    path = init_dir(root, kind, pipeline, "-grown")
    options = resolve_options(read_json(recipe_file(f"{kind}_model.json", pipeline)))
    loaded = load_model_folder(bundled, device="cpu")
    model = build_model(options)
    _, notes = transfer_weights(model, loaded.model.float().state_dict(), options, allow_vocab_swap=False)
    prior = json.loads((bundled / "provenance.json").read_text()).get("total_steps", 0)
    provenance = {"init": str(bundled.relative_to(REPO)), "total_steps": prior, "notes": notes}
    save_model_folder(path, model, model.options, loaded.tokenizer, provenance=provenance)
    return path


def has_checkpoint(rdir: Path) -> bool:
    from finetune.train.resume_state import list_checkpoints

    return bool(list_checkpoints(rdir))


def init_arguments(root: Path, kind: str, pipeline: str) -> tuple[list[str], str]:
    """The trainer arguments that say where the run starts (resume, bundled weights or scratch) and why."""
    rdir = run_dir(root, kind, pipeline)
    bundled = bundled_dir(kind, pipeline)
    if has_checkpoint(rdir):
        return ["--resume", "latest"], "resuming from its newest checkpoint"
    if (bundled / "config.json").is_file() and not (rdir / "lineage.json").is_file():
        prior = json.loads((bundled / "provenance.json").read_text()).get("total_steps", 0)
        rdir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(rdir / "lineage.json", {"init": str(bundled.relative_to(REPO)), "steps_before": prior})
        if architecture_changed(kind, pipeline):
            how = f"no checkpoint: growing the bundled weights ({prior} steps) into {kind}_model.json's architecture"
            return ["--init", str(make_grown_init(root, kind, pipeline))], how
        how = f"no checkpoint: continuing from the bundled weights ({prior} steps; optimizer state restarts)"
        return ["--init", str(bundled)], how
    how = "restarting a run that had not reached its first checkpoint"
    if (rdir / "lineage.json").is_file():
        lineage = json.loads((rdir / "lineage.json").read_text())
        if lineage["init"] == "scratch":
            return ["--init", str(make_scratch_init(root, kind, pipeline=pipeline))], how
        grown = architecture_changed(kind, pipeline)
        return ["--init", str(make_grown_init(root, kind, pipeline) if grown else REPO / lineage["init"])], how
    rdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(rdir / "lineage.json", {"init": "scratch", "steps_before": 0})
    return ["--init", str(make_scratch_init(root, kind, pipeline=pipeline))], "from scratch"


def train(
    root: Path,
    kind: str,
    max_steps: int | None,
    threads: int,
    processes: int,
    pipeline: str = DEFAULT_PIPELINE,
    count: int | None = None,
) -> int:
    data = build_dataset(root, processes, pipeline, count)
    cmd = [sys.executable, "-m", "finetune", "train", "--config", str(recipe_file(f"{kind}_train.yaml", pipeline))]
    cmd += ["--run-dir", str(run_dir(root, kind, pipeline)), "--data", str(data)]
    start, how = init_arguments(root, kind, pipeline)
    cmd += start
    if max_steps:
        cmd += ["--max-steps", str(max_steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print(f"{pipeline} {kind}: {how}\n+ OMP_NUM_THREADS={threads} {' '.join(cmd)}", flush=True)
    return subprocess.run(cmd, cwd=REPO, env=env).returncode


# --- export ------------------------------------------------------------------------------------------------------


def newest_checkpoint(rdir: Path) -> Path:
    from finetune.train.resume_state import list_checkpoints

    found = list_checkpoints(rdir)
    if not found:
        raise SystemExit(f"no checkpoint in {rdir / 'checkpoints'} to export")
    return found[-1]


def world_provenance(pipeline: str) -> dict:
    """What the exported models were trained on: the evaluator's world, the dataset options, and for the emoji
    pipeline the art's licence and credit line (models trained on CC BY-SA art carry that licence)."""
    dataset = read_json(recipe_file("world.json", pipeline))
    if pipeline == "emoji":
        from data_pipeline.emoji_world import make_emoji_world
        from data_pipeline.sources.openmoji_art import ATTRIBUTION, LICENSE

        world = make_emoji_world(
            emoji=dataset["emoji"],
            backgrounds=dataset["backgrounds"],
            sizes=dataset.get("emoji_sizes"),
            **({"pair_p": dataset["pair_p"]} if "pair_p" in dataset else {}),
        )
        art = {"license": LICENSE, "attribution": ATTRIBUTION}
        # "world": the evaluator's EmojiWorld (EmojiWorld.from_dict); "dataset": the emoji-scenes options
        return {"world": world.to_dict(), "dataset": dataset, **art}
    from data_pipeline.synthetic import make_world

    world = make_world(
        shapes=dataset["shapes"],
        colors=dataset["colors"],
        backgrounds=dataset["backgrounds"],
        positions=dataset.get("positions"),
        sizes=dataset.get("shape_sizes"),
    )
    # "world": the evaluator's World (World.from_dict); "dataset": the synthetic subcommand's options
    return {"world": world.to_dict(), "dataset": dataset}


TRAINER_KEYS = (
    "batch_size",
    "lr",
    "lr_warmup_steps",
    "ema_decay",
    "uncond_p",
    "loss_type",
    "mse_weighting",
    "mixed_precision",
    "crop_scale_min",
    "seed",
)


def export_provenance(root: Path, kind: str, pipeline: str, state: dict, ema: bool) -> dict:
    rdir = run_dir(root, kind, pipeline)
    lineage = json.loads((rdir / "lineage.json").read_text()) if (rdir / "lineage.json").is_file() else {}
    steps_before = int(lineage.get("steps_before", 0))
    config = state.get("config", {})
    flag = "" if pipeline == DEFAULT_PIPELINE else f"--pipeline {pipeline} "
    script = f"python scripts/bundled/train_bundled.py {flag}"
    provenance = {
        "what": f"bundled {kind} model of the {pipeline} pipeline, trained from scratch by "
        "scripts/bundled/train_bundled.py",
        "weights": "EMA" if ema else "raw (no EMA in the checkpoint)",
        "run_steps": int(state["step"]),
        "steps_before": steps_before,
        "total_steps": steps_before + int(state["step"]),
        "samples_seen": (steps_before + int(state["step"]))
        * int(config.get("batch_size", 0))
        * int(config.get("grad_accum", 1)),
        "started_from": lineage.get("init", "unknown"),
        **world_provenance(pipeline),
        "trainer": {k: config.get(k) for k in TRAINER_KEYS},
        "reproduce": f"{script}train {kind} --root DIR && {script}export {kind} --root DIR",
    }
    manifest = dataset_dir(root, pipeline) / "manifest.json"
    if manifest.is_file():
        import hashlib

        provenance["dataset_manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return provenance


def export(root: Path, kind: str, pipeline: str = DEFAULT_PIPELINE, to: Path | None = None) -> Path:
    """The newest checkpoint's EMA weights (as the model's only weights) -> finetune/bundled_weights/[<pipeline>/]<kind>
    (or `to`/<kind>), fp16."""
    import torch
    from safetensors.torch import load_file

    from finetune.model_folder import write_model_folder
    from finetune.tokenizers import get_tokenizer

    ckpt = newest_checkpoint(run_dir(root, kind, pipeline))
    state = json.loads((ckpt / "state.json").read_text())
    options = state["model_options"]
    weights = ckpt / ("ema.safetensors" if (ckpt / "ema.safetensors").is_file() else "model.safetensors")
    provenance = export_provenance(root, kind, pipeline, state, weights.name == "ema.safetensors")
    target = to / kind if to else bundled_dir(kind, pipeline)
    tokenizer = get_tokenizer(options["tokenizer"], options["text_ctx"])
    state_dict = load_file(str(weights))
    if PIPELINES[pipeline].trim_vocab:
        provenance["vocabulary_trimmed"] = trim_to_dataset(root, pipeline, tokenizer, state_dict)
        options = {**options, "token_rows": tokenizer.vocab_size}
    # write_model_folder builds the folder beside the target and swaps it in
    write_model_folder(target, state_dict, options, tokenizer, provenance=provenance, dtype=torch.float16)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(
        f"{pipeline} {kind}: exported {ckpt.name} ({provenance['total_steps']} steps in all) -> {target} "
        f"({size / 1e6:.1f} MB)",
        flush=True,
    )
    return target


def trim_to_dataset(root: Path, pipeline: str, tokenizer, state_dict: dict) -> dict:
    """Trim the tokenizer and the weights (in place) to the tokens of the pipeline's dataset captions (see
    finetune.vocab_trim); what the provenance records of it."""
    from finetune.commands.trim_vocab import dataset_captions
    from finetune.vocab_trim import trim_vocabulary

    data = dataset_dir(root, pipeline)
    if not (data / "manifest.json").is_file():
        raise SystemExit(f"export trims the vocabulary to the dataset's captions: no dataset at {data} (run `data`)")
    trimmed = trim_vocabulary(tokenizer, dataset_captions(str(data)), [state_dict])
    print(f"{pipeline}: kept {trimmed['kept_tokens']} of {trimmed['of']} tokens (the dataset's captions)", flush=True)
    return trimmed


def status(root: Path, pipeline: str = DEFAULT_PIPELINE) -> None:
    from finetune.train.resume_state import list_checkpoints

    for kind in KINDS:
        rdir = run_dir(root, kind, pipeline)
        ckpts = list_checkpoints(rdir)
        bundled = bundled_dir(kind, pipeline) / "provenance.json"
        shipped = json.loads(bundled.read_text()).get("total_steps", "?") if bundled.is_file() else "none"
        print(
            f"{pipeline} {kind}: run {rdir} newest checkpoint {ckpts[-1].name if ckpts else 'none'}; "
            f"bundled steps {shipped}"
        )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO / "runs" / "bundled",
        help="folder for the dataset and the run folders (default: runs/bundled, git-ignored)",
    )
    parser.add_argument(
        "--pipeline",
        choices=tuple(PIPELINES),
        default=DEFAULT_PIPELINE,
        help="shapes (the synthetic world; default) or emoji (OpenMoji scenes, recipe in scripts/bundled/emoji/)",
    )
    parser.add_argument("--processes", type=int, default=2, help="dataset builder processes (default: 2)")
    count_help = "build only this many scenes (a trial run; default: world.json's count)"
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="build the dataset (skipped when complete)")
    p.add_argument("--count", type=int, default=None, help=count_help)
    p = sub.add_parser("train", help="train or resume one model")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step of the run (default: the yaml's)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1. On 2 idle cores 2 threads run the emoji base 1.7x faster, but beside any other "
        "job they run slower than 1: 2.7 s per step vs 1.6 s)",
    )
    p.add_argument("--count", type=int, default=None, help=count_help)
    p = sub.add_parser("export", help="export the newest EMA weights to finetune/bundled_weights/ in fp16")
    p.add_argument("kinds", nargs="*", metavar="{base,upsampler}", help="which models (default: both)")
    p.add_argument("--to", type=Path, default=None, help="write DIR/<kind> instead (a trial; not the bundle)")
    sub.add_parser("status", help="newest checkpoints and the bundled models' step counts")
    args = parser.parse_args(argv)
    if args.command == "export" and set(args.kinds) - set(KINDS):
        parser.error(
            f"export: unknown model(s) {', '.join(sorted(set(args.kinds) - set(KINDS)))}; choose from "
            f"{', '.join(KINDS)}"
        )
    if getattr(args, "count", None) is not None and args.count < 1:
        parser.error("--count must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    root, pipeline = args.root.resolve(), args.pipeline
    if args.command == "data":
        print(build_dataset(root, args.processes, pipeline, args.count))
    elif args.command == "train":
        return train(root, args.kind, args.max_steps, args.threads, args.processes, pipeline, args.count)
    elif args.command == "export":
        for kind in args.kinds or KINDS:
            export(root, kind, pipeline, args.to.resolve() if args.to else None)
    else:
        status(root, pipeline)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
