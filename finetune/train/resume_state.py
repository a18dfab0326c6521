"""Training checkpoints: everything a run needs to continue exactly where it stopped.

Layout of `run_dir/checkpoints/step-NNNNNNNN/`:
  model.safetensors, ema.safetensors   weights (float32)
  optimizer.pt                          AdamW state (read back with weights_only=True)
  state.json                            step, settings, model options, EMA/guard/grad-scaler state
  rank-RRRRR.pt, rank-RRRRR.json        per process: RNG states, data stream places

A checkpoint is written into a hidden temporary folder and renamed into place when complete, so a folder named
step-* is always whole; the newest K are kept.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from data_pipeline.errors import UserError
from data_pipeline.fsutil import atomic_write_text, disk_writes, publish_dir

from ..model import resolve_options

STEP_DIR = re.compile(r"^step-(\d{8})$")
RESUME_STATE_FORMAT_VERSION = 1


class ResumeStateError(UserError, ValueError):
    """A training checkpoint that is missing, unreadable or of another format."""


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := STEP_DIR.match(p.name)) and p.is_dir() and (p / "state.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def find_checkpoint(run_dir: str | Path, resume: str) -> Path:
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise ResumeStateError(f"--resume latest: no checkpoint in {checkpoint_root(run_dir)}")
        return found[-1]
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise ResumeStateError(f"{path} is not a training checkpoint (no state.json)")
    return path


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise ResumeStateError(f"cannot read {path / 'state.json'}: {exc}") from None
    if not isinstance(state, dict):
        raise ResumeStateError(f"{path / 'state.json'}: expected a JSON object, got {type(state).__name__}")
    if state.get("format_version") != RESUME_STATE_FORMAT_VERSION:
        raise ResumeStateError(
            f"{path} has checkpoint format {state.get('format_version')}, expected {RESUME_STATE_FORMAT_VERSION}"
        )
    if "model_options" in state:  # the same checks as a model folder's options, before anything is built from them
        if not isinstance(state["model_options"], dict):
            raise ResumeStateError(f"{path / 'state.json'}: model_options must be a JSON object")
        try:
            state["model_options"] = resolve_options(state["model_options"])
        except ValueError as exc:
            raise ResumeStateError(f"{path / 'state.json'}: {exc}") from None
    return state


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def rng_state(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    np_state = np.random.get_state(legacy=False)
    np_state["state"] = {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])}
    py_state = random.getstate()
    plain = {"numpy": np_state, "python": [py_state[0], list(py_state[1]), py_state[2]]}
    return tensors, plain


def restore_rng(generator: torch.Generator, tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    generator.set_state(tensors["generator"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    np_state = dict(plain["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32), "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))


class Checkpointer:
    """Writes and reads checkpoints for one process of a (possibly distributed) run."""

    def __init__(self, run_dir: str | Path, keep: int, rank: int, is_main: bool, barrier):
        self.root = checkpoint_root(run_dir)
        self.keep = keep
        self.rank = rank
        self.is_main = is_main
        self.barrier = barrier

    def clean_partial(self) -> None:
        """Remove temporary folders left by a process killed while writing."""
        if self.is_main and self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(".tmp-") or ".old-" in p.name:
                    shutil.rmtree(p, ignore_errors=True)

    def save(
        self,
        step: int,
        model_state: dict,
        ema_state: dict | None,
        optimizer_state: dict,
        state: dict[str, Any],
        rank_tensors: dict[str, torch.Tensor],
        rank_plain: dict[str, Any],
    ) -> Path:
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-step-{step:08d}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        with disk_writes(tmp):
            torch.save(_contiguous(rank_tensors), tmp / f"rank-{self.rank:05d}.pt")
            (tmp / f"rank-{self.rank:05d}.json").write_text(json.dumps(rank_plain))
            if self.is_main:
                save_file(_contiguous(model_state), str(tmp / "model.safetensors"))
                if ema_state is not None:
                    save_file(_contiguous(ema_state), str(tmp / "ema.safetensors"))
                torch.save(optimizer_state, tmp / "optimizer.pt")
                versioned = {**state, "format_version": RESUME_STATE_FORMAT_VERSION}
                (tmp / "state.json").write_text(json.dumps(versioned, indent=1))
        self.barrier()
        if self.is_main:
            publish_dir(tmp, final)
            atomic_write_text(self.root / "latest.txt", final.name + "\n")
            self._prune()
        self.barrier()
        return final

    def _prune(self) -> None:
        found = list_checkpoints(self.root.parent)
        for old in found[: max(0, len(found) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, path: Path, world_size: int) -> dict[str, Any]:
        state = read_state(path)
        out = {"state": state, "model": load_file(str(path / "model.safetensors"))}
        ema_path = path / "ema.safetensors"
        out["ema"] = load_file(str(ema_path)) if ema_path.is_file() else None
        out["optimizer"] = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        rank_pt = path / f"rank-{self.rank:05d}.pt"
        if rank_pt.is_file():
            out["rank_tensors"] = torch.load(rank_pt, map_location="cpu", weights_only=True)
            out["rank_plain"] = json.loads((path / f"rank-{self.rank:05d}.json").read_text())
        else:
            out["rank_tensors"], out["rank_plain"] = None, None
        return out
