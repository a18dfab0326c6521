"""Fine-tunes started from the studio: a ``python -m finetune train`` child process, watched and cancelled.

The run is an ordinary trainer run (its settings written to ``run_dir/studio-config.yaml``), so it can
also be resumed from a terminal. Progress comes from what the trainer writes anyway: TensorBoard
scalars and images in the run folder, and its console output, which the studio captures to a log.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from data_pipeline.errors import UserError
from finetune.adapters.settings import CONFIG_FILE as ADAPTER_CONFIG_FILE
from finetune.hub import OFFLINE_ENV
from finetune.train.adapter_run import EXPORT_DIR as ADAPTER_EXPORT_DIR
from finetune.train.config import ConfigError, TrainConfig, build_config
from finetune.train.resume_state import ResumeStateError, list_checkpoints, read_state

from .access import AUTH_ENV

LOG_NAME = "studio-train.log"
CONFIG_NAME = "studio-config.yaml"


class TrainingError(UserError, RuntimeError):
    """The run cannot be started (bad settings, one already running) or inspected."""


def validate_settings(settings: dict) -> dict:
    """The trainer's own validation, before any process starts; returns the resolved settings."""
    try:
        return build_config(settings).to_dict()
    except ConfigError as exc:
        raise TrainingError(str(exc)) from exc


def trainer_bounds(name: str) -> dict:
    """The trainer's own range for setting ``name``, as Gradio ``minimum``/``maximum`` (the form checks it too)."""
    [meta] = [f.metadata for f in dataclasses.fields(TrainConfig) if f.name == name]
    return {"minimum": meta.get("min"), "maximum": meta.get("max")}


def bounds_text(bounds: dict) -> str:
    """`` (1–64)``, `` (≥ 1)`` or nothing: the range for a form label (Gradio's refusal names no field)."""
    low, high = bounds["minimum"], bounds["maximum"]
    if low is not None and high is not None:
        return f" ({low:g}–{high:g})"
    if low is not None:
        return f" (≥ {low:g})"
    return f" (≤ {high:g})" if high is not None else ""


@dataclass
class Progress:
    running: bool
    returncode: int | None
    step: int
    max_steps: int
    losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    samples: list[tuple[str, int, bytes]] = field(default_factory=list)  # (tag, step, PNG/JPEG bytes)
    log_tail: str = ""
    checkpoint: Path | None = None  # the newest complete checkpoint folder of the run
    cancelled: bool = False
    run_dir: Path | None = None
    exported: Path | None = None  # where the run writes its model (or adapter) folder when it finishes

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0

    def describe(self) -> str:
        """One status line for the user."""
        if self.running:
            return f"running: step {self.step} of {self.max_steps}" + (" (cancelling…)" if self.cancelled else "")
        if self.returncode == 0:
            exported = self.exported or self.run_dir / "model"
            kind = "adapter" if (exported / ADAPTER_CONFIG_FILE).is_file() else "model"
            return f"finished: step {self.step} of {self.max_steps}; {kind} in {exported}"
        resume = (
            f"resume from a terminal with python -m finetune train --config {self.run_dir / CONFIG_NAME} "
            f"--resume latest"
        )
        how = "cancelled" if self.cancelled else f"stopped (exit code {self.returncode})"
        if self.checkpoint is not None:
            return f"{how} at step {self.step}; checkpoint saved in {self.checkpoint}; {resume}"
        return f"{how} at step {self.step}; no checkpoint was written (see the trainer output)"


class TrainingJob:
    """One trainer process. ``cancel`` sends SIGINT (the trainer checkpoints and exits), then SIGTERM."""

    def __init__(self, run_dir: str | Path, settings: dict):
        self.run_dir = Path(run_dir)
        self.settings = dict(settings, run_dir=str(self.run_dir))
        self.resolved = validate_settings(self.settings)
        self.process: subprocess.Popen | None = None
        self.cancelled = False
        self._log_handle = None

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_NAME

    @property
    def export_path(self) -> Path:
        """Where the trainer writes the model folder (or, for an adapter run, the adapter folder)."""
        default = self.run_dir / (ADAPTER_EXPORT_DIR if self.resolved.get("adapter") else "model")
        return Path(self.resolved.get("export_dir") or default)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "finetune", "train", "--config", str(self.run_dir / CONFIG_NAME)]

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.run_dir / CONFIG_NAME
        tmp = config_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(self.settings, sort_keys=True), encoding="utf-8")
        tmp.replace(config_path)
        self._log_handle = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop(AUTH_ENV, None)  # the trainer has no use for the studio's logins
        env[OFFLINE_ENV] = "1"  # a studio fine-tune starts from cached or local models only, never a download
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C in the studio's terminal must not kill the run uncheckpointed
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cancel(self, grace_s: float = 120.0) -> int | None:
        """Ask the trainer to checkpoint and stop; wait up to ``grace_s`` before escalating to SIGTERM."""
        if not self.running:
            return self.returncode
        self.cancelled = True
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.returncode

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def progress(self, log_chars: int = 4000) -> Progress:
        running = self.running  # read first: a run that ends meanwhile is then seen with all it wrote
        scalars, images = read_tensorboard(self.run_dir)
        losses = {tag: points for tag, points in scalars.items() if tag.rsplit("/", 1)[-1].endswith("loss")}
        step = max((points[-1][0] for points in scalars.values() if points), default=0)
        checkpoint, checkpoint_step = latest_checkpoint(self.run_dir)
        return Progress(
            running=running,
            returncode=None if running else self.returncode,
            step=max(step, checkpoint_step),  # scalars are logged every few steps; a checkpoint knows its step
            max_steps=int(self.resolved.get("max_steps") or 0),
            losses=losses,
            samples=images,
            log_tail=tail_text(self.log_path, log_chars),
            checkpoint=checkpoint,
            cancelled=self.cancelled,
            run_dir=self.run_dir,
            exported=self.export_path,
        )


def latest_checkpoint(run_dir: Path) -> tuple[Path | None, int]:
    """The newest complete trainer checkpoint under ``run_dir`` and its step, or ``(None, 0)``."""
    found = list_checkpoints(run_dir)
    if not found:
        return None, 0
    try:
        step = int(read_state(found[-1])["step"])
    except (ResumeStateError, KeyError, TypeError, ValueError):
        step = 0
    return found[-1], step


def tail_text(path: Path, chars: int) -> str:
    """The end of a console log, with progress-bar carriage returns collapsed to their last state."""
    if not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, io.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - chars * 4))
        text = handle.read().decode("utf-8", errors="replace")
    lines = [line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r") for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)  # colour codes
    return text[-chars:]


_tb_lock = threading.Lock()


def read_tensorboard(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], list[tuple[str, int, bytes]]]:
    """All scalar series and the newest image of each image tag from the event files under ``run_dir``."""
    files = sorted(Path(run_dir).rglob("events.out.tfevents.*")) if Path(run_dir).is_dir() else []
    if not files:
        return {}, []
    # lazy: TensorBoard's reader takes seconds to import and only the Train tab's charts need it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    images: dict[str, tuple[int, bytes]] = {}
    with _tb_lock:
        for folder in sorted({f.parent for f in files}):
            acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 4})
            try:
                acc.Reload()
            except Exception:  # a file being written: read it on the next poll
                continue
            prefix = os.path.relpath(folder, run_dir)
            prefix = "" if prefix == "." else prefix + "/"
            tags = acc.Tags()
            for tag in tags.get("scalars", []):
                series = scalars.setdefault(prefix + tag, {})
                for event in acc.Scalars(tag):
                    series[event.step] = event.value  # a resumed run rewrites steps: keep the newest
            for tag in tags.get("images", []):
                events = acc.Images(tag)
                if events:
                    images[prefix + tag] = (events[-1].step, events[-1].encoded_image_string)
    return (
        {tag: sorted(series.items()) for tag, series in scalars.items()},
        [(tag, step, data) for tag, (step, data) in sorted(images.items())],
    )


def new_run_dir(runs_root: str | Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(runs_root) / f"run-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(runs_root) / f"run-{stamp}-{n}"
    return path
