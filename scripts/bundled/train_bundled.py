"""Reproduce the bundled models: build the synthetic dataset, train (or resume) the base and the upsampler,
export the newest EMA weights into finetune/bundled_weights/ in fp16.

    python scripts/bundled/train_bundled.py data    --root DIR
    python scripts/bundled/train_bundled.py train   base|upsampler --root DIR [--max-steps N] [--threads N]
    python scripts/bundled/train_bundled.py export  [base|upsampler ...] --root DIR
    python scripts/bundled/train_bundled.py status  --root DIR

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
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KINDS = ("base", "upsampler")
DATASET_NAME = "shapes-plain"


def bundled_dir(kind: str) -> Path:
    return REPO / "finetune" / "bundled_weights" / kind


def run_dir(root: Path, kind: str) -> Path:
    return root / f"bundled-{kind}"


def dataset_dir(root: Path) -> Path:
    return root / "data" / DATASET_NAME


def read_json(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def write_json_atomic(path: Path, data: dict) -> None:
    from data_pipeline.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


# --- dataset -----------------------------------------------------------------------------------------------------


def build_dataset(root: Path, processes: int) -> Path:
    """Build (or finish) the synthetic dataset described by world.json; a complete one is left alone."""
    out = dataset_dir(root)
    world = read_json(HERE / "world.json")
    manifest = out / "manifest.json"
    if manifest.is_file():
        totals = json.loads(manifest.read_text()).get("totals", {})
        if totals.get("samples", totals.get("written", 0)) >= world["count"]:
            return out
    cmd = [
        sys.executable,
        "-m",
        "data_pipeline",
        "synthetic",
        "--out",
        str(out),
        "--no-progress",
        "--processes",
        str(processes),
    ]
    flags = {
        "count": "--count",
        "seed": "--seed",
        "image_sizes": "--sizes",
        "image_format": "--image-format",
        "style": "--style",
        "shapes": "--shapes",
        "colors": "--colors",
        "backgrounds": "--backgrounds",
        "val_fraction": "--val-fraction",
        "shard_size": "--shard-size",
    }
    for key, flag in flags.items():
        cmd += [flag, str(world[key])]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return out


# --- training ----------------------------------------------------------------------------------------------------


def make_scratch_init(root: Path, kind: str, seed: int = 0) -> Path:
    """A model folder with freshly initialised weights for the architecture in <kind>_model.json."""
    import torch

    from finetune.model import build_model
    from finetune.model_folder import save_model_folder
    from finetune.tokenizers import get_tokenizer

    path = root / "init" / kind
    options = read_json(HERE / f"{kind}_model.json")
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
        provenance={"init": "scratch", "seed": seed, "architecture": f"scripts/bundled/{kind}_model.json"},
    )
    return path


def architecture_changed(kind: str) -> bool:
    """Whether <kind>_model.json asks for options the committed bundled weights were not built with."""
    saved = json.loads((bundled_dir(kind) / "config.json").read_text()).get("options")
    if not saved:  # no architecture recorded: nothing to compare against
        return False
    wanted = read_json(HERE / f"{kind}_model.json")
    return any(saved.get(k, False if k == "coord_channels" else None) != v for k, v in wanted.items())


def make_grown_init(root: Path, kind: str) -> Path:
    """A model folder with <kind>_model.json's architecture and the bundled weights carried over.

    Used when the architecture gains input channels (e.g. coordinate channels): they start at zero, so the grown
    model draws exactly what the bundled one did until training teaches it to use them."""
    from finetune.model import build_model, resolve_options
    from finetune.model_folder import load_model_folder, save_model_folder
    from finetune.train.model_init import transfer_weights

    path = root / "init" / f"{kind}-grown"
    options = resolve_options(read_json(HERE / f"{kind}_model.json"))
    loaded = load_model_folder(bundled_dir(kind), device="cpu")
    model = build_model(options)
    _, notes = transfer_weights(model, loaded.model.float().state_dict(), options, allow_vocab_swap=False)
    prior = json.loads((bundled_dir(kind) / "provenance.json").read_text()).get("total_steps", 0)
    provenance = {"init": str(bundled_dir(kind).relative_to(REPO)), "total_steps": prior, "notes": notes}
    save_model_folder(path, model, model.options, loaded.tokenizer, provenance=provenance)
    return path


def has_checkpoint(rdir: Path) -> bool:
    from finetune.train.resume_state import list_checkpoints

    return bool(list_checkpoints(rdir))


def train(root: Path, kind: str, max_steps: int | None, threads: int, processes: int) -> int:
    data = build_dataset(root, processes)
    rdir = run_dir(root, kind)
    cmd = [
        sys.executable,
        "-m",
        "finetune",
        "train",
        "--config",
        str(HERE / f"{kind}_train.yaml"),
        "--run-dir",
        str(rdir),
        "--data",
        str(data),
    ]
    if has_checkpoint(rdir):
        cmd += ["--resume", "latest"]
        how = "resuming from its newest checkpoint"
    elif (bundled_dir(kind) / "config.json").is_file() and not (rdir / "lineage.json").is_file():
        prior = json.loads((bundled_dir(kind) / "provenance.json").read_text()).get("total_steps", 0)
        rdir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            rdir / "lineage.json", {"init": str(bundled_dir(kind).relative_to(REPO)), "steps_before": prior}
        )
        if architecture_changed(kind):
            cmd += ["--init", str(make_grown_init(root, kind))]
            how = f"no checkpoint: growing the bundled weights ({prior} steps) into {kind}_model.json's architecture"
        else:
            cmd += ["--init", str(bundled_dir(kind))]
            how = f"no checkpoint: continuing from the bundled weights ({prior} steps; optimizer state restarts)"
    elif (rdir / "lineage.json").is_file():
        lineage = json.loads((rdir / "lineage.json").read_text())
        if lineage["init"] == "scratch":
            init = make_scratch_init(root, kind)
        else:
            init = make_grown_init(root, kind) if architecture_changed(kind) else REPO / lineage["init"]
        cmd += ["--init", str(init)]
        how = "restarting a run that had not reached its first checkpoint"
    else:
        rdir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(rdir / "lineage.json", {"init": "scratch", "steps_before": 0})
        cmd += ["--init", str(make_scratch_init(root, kind))]
        how = "from scratch"
    if max_steps:
        cmd += ["--max-steps", str(max_steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print(f"{kind}: {how}\n+ OMP_NUM_THREADS={threads} {' '.join(cmd)}", flush=True)
    return subprocess.run(cmd, cwd=REPO, env=env).returncode


# --- export ------------------------------------------------------------------------------------------------------


def newest_checkpoint(rdir: Path) -> Path:
    from finetune.train.resume_state import list_checkpoints

    found = list_checkpoints(rdir)
    if not found:
        raise SystemExit(f"no checkpoint in {rdir / 'checkpoints'} to export")
    return found[-1]


def export(root: Path, kind: str) -> Path:
    """The newest checkpoint's EMA weights (as the model's only weights) -> finetune/bundled_weights/<kind>, fp16."""
    import torch
    from safetensors.torch import load_file

    from finetune.model_folder import write_model_folder
    from finetune.tokenizers import get_tokenizer

    rdir = run_dir(root, kind)
    ckpt = newest_checkpoint(rdir)
    state = json.loads((ckpt / "state.json").read_text())
    options = state["model_options"]
    weights = ckpt / ("ema.safetensors" if (ckpt / "ema.safetensors").is_file() else "model.safetensors")
    lineage = json.loads((rdir / "lineage.json").read_text()) if (rdir / "lineage.json").is_file() else {}
    steps_before = int(lineage.get("steps_before", 0))
    config = state.get("config", {})
    dataset = read_json(HERE / "world.json")
    from data_pipeline.synthetic import make_world

    world = make_world(
        shapes=dataset["shapes"],
        colors=dataset["colors"],
        backgrounds=dataset["backgrounds"],
        positions=dataset.get("positions"),
        sizes=dataset.get("shape_sizes"),
    )
    provenance = {
        "what": f"bundled {kind} model, trained from scratch on the synthetic world by "
        "scripts/bundled/train_bundled.py",
        "weights": "EMA" if weights.name == "ema.safetensors" else "raw (no EMA in the checkpoint)",
        "run_steps": int(state["step"]),
        "steps_before": steps_before,
        "total_steps": steps_before + int(state["step"]),
        "samples_seen": (steps_before + int(state["step"]))
        * int(config.get("batch_size", 0))
        * int(config.get("grad_accum", 1)),
        "started_from": lineage.get("init", "unknown"),
        "world": world.to_dict(),  # the evaluator's World (World.from_dict)
        "dataset": dataset,  # scripts/bundled/world.json: the synthetic subcommand's options
        "trainer": {
            k: config.get(k)
            for k in (
                "batch_size",
                "lr",
                "lr_warmup_steps",
                "ema_decay",
                "uncond_p",
                "loss_type",
                "mixed_precision",
                "crop_scale_min",
                "seed",
            )
        },
        "reproduce": f"python scripts/bundled/train_bundled.py train {kind} --root DIR && "
        f"python scripts/bundled/train_bundled.py export {kind} --root DIR",
    }
    manifest = dataset_dir(root) / "manifest.json"
    if manifest.is_file():
        import hashlib

        provenance["dataset_manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    target = bundled_dir(kind)
    tokenizer = get_tokenizer(options["tokenizer"], options["text_ctx"])
    # write_model_folder builds the folder beside the target and swaps it in
    write_model_folder(target, load_file(str(weights)), options, tokenizer, provenance=provenance, dtype=torch.float16)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(
        f"{kind}: exported {ckpt.name} ({provenance['total_steps']} steps in all) -> {target} ({size / 1e6:.1f} MB)",
        flush=True,
    )
    return target


def status(root: Path) -> None:
    from finetune.train.resume_state import list_checkpoints

    for kind in KINDS:
        rdir = run_dir(root, kind)
        ckpts = list_checkpoints(rdir)
        bundled = bundled_dir(kind) / "provenance.json"
        shipped = json.loads(bundled.read_text()).get("total_steps", "?") if bundled.is_file() else "none"
        print(f"{kind}: run {rdir} newest checkpoint {ckpts[-1].name if ckpts else 'none'}; bundled steps {shipped}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO / "runs" / "bundled",
        help="folder for the dataset and the run folders (default: runs/bundled, git-ignored)",
    )
    parser.add_argument("--processes", type=int, default=2, help="dataset builder processes (default: 2)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("data", help="build the synthetic dataset (skipped when complete)")
    p = sub.add_parser("train", help="train or resume one model")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step of the run (default: the yaml's)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine more threads measured 8x slower)",
    )
    p = sub.add_parser("export", help="export the newest EMA weights to finetune/bundled_weights/ in fp16")
    p.add_argument("kinds", nargs="*", metavar="{base,upsampler}", help="which models (default: both)")
    sub.add_parser("status", help="newest checkpoints and the bundled models' step counts")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.command == "export" and set(args.kinds) - set(KINDS):
        parser.error(
            f"export: unknown model(s) {', '.join(sorted(set(args.kinds) - set(KINDS)))}; choose from "
            f"{', '.join(KINDS)}"
        )
    if args.command == "data":
        print(build_dataset(root, args.processes))
    elif args.command == "train":
        return train(root, args.kind, args.max_steps, args.threads, args.processes)
    elif args.command == "export":
        for kind in args.kinds or KINDS:
            export(root, kind)
    else:
        status(root)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
