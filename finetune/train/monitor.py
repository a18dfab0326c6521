"""What the user sees: TensorBoard scalars and images, a per-step metrics.jsonl, and the progress bar.

Per-step numbers are accumulated on the device and only turned into Python floats when logged, except the
step loss and gradient norm, which the guards need every step anyway.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from data_pipeline.fsutil import atomic_write_text

QUARTILES = 4


class IntervalStats:
    """Sums over a logging interval: losses, per-timestep-quartile losses, samples, wall time."""

    def __init__(self, num_timesteps: int, device: torch.device):
        self.num_timesteps = num_timesteps
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # loss, mse, vb
        self.count = 0
        self.q_sums = torch.zeros(QUARTILES, device=self.device, dtype=torch.float64)
        self.q_counts = torch.zeros(QUARTILES, device=self.device, dtype=torch.float64)
        self.grad_norms: list[float] = []
        self.samples = 0
        self.steps = 0
        self.skipped_samples = 0
        self.started = time.perf_counter()

    def add_skipped(self, n: int) -> None:
        self.skipped_samples += n

    @torch.no_grad()
    def add_micro_batch(self, losses: dict[str, torch.Tensor], t: torch.Tensor) -> None:
        per = torch.stack([losses["loss"], losses["mse"], losses["vb"]]).detach().double()
        self.sums += per.sum(dim=1)
        self.count += per.shape[1]
        q = (t * QUARTILES // self.num_timesteps).clamp_(0, QUARTILES - 1)
        self.q_sums.index_add_(0, q, losses["loss"].detach().double())
        self.q_counts.index_add_(0, q, torch.ones_like(q, dtype=torch.float64))

    def summary(self, reduce) -> dict[str, float]:
        extra = torch.tensor([float(self.count), float(self.skipped_samples)], device=self.device, dtype=torch.float64)
        packed = reduce(torch.cat([self.sums, extra[:1], self.q_sums, self.q_counts, extra[1:]]))
        values = packed.tolist()
        skipped_samples = values.pop()
        n = max(values[3], 1.0)
        out = {"train/loss": values[0] / n, "train/mse": values[1] / n, "train/vb": values[2] / n}
        q_sums, q_counts = values[4 : 4 + QUARTILES], values[4 + QUARTILES :]
        for i in range(QUARTILES):
            if q_counts[i]:
                out[f"train/loss_q{i}"] = q_sums[i] / q_counts[i]
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        if self.grad_norms:
            out["train/grad_norm"] = float(np.mean(self.grad_norms))
        out["train/samples_per_sec"] = self.samples / elapsed
        out["train/steps_per_sec"] = self.steps / elapsed
        out["data/skipped_samples"] = skipped_samples
        return out


class Monitor:
    """TensorBoard + metrics.jsonl + progress bar; a no-op on non-main processes."""

    def __init__(self, run_dir: Path, enabled: bool, progress: bool, start_step: int, max_steps: int):
        self.enabled = enabled
        self.writer = None
        self.metrics = None
        self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter  # lazy for start-up time (~0.2 s): main process only

        # purge_step: TensorBoard drops events logged after the resumed checkpoint by the interrupted run
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        path = run_dir / "metrics.jsonl"
        _truncate_metrics(path, start_step)
        self.metrics = open(path, "a", encoding="utf-8")
        if progress:
            self.bar = tqdm(total=max_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def step(self, record: dict) -> None:
        if not self.enabled:
            return
        self.metrics.write(json.dumps(record) + "\n")
        if self.bar is not None:
            self.bar.update(1)
            loss = record.get("loss")
            self.bar.set_postfix(loss=f"{loss:.4f}" if loss is not None else "nan", refresh=False)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.metrics.flush()

    def image(self, step: int, tag: str, grid_hwc: np.ndarray) -> None:
        if self.enabled:
            self.writer.add_image(tag, grid_hwc, step, dataformats="HWC")

    def text(self, step: int, tag: str, text: str) -> None:
        if self.enabled:
            self.writer.add_text(tag, text, step)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def flush(self) -> None:
        if self.enabled:
            self.writer.flush()
            self.metrics.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.writer.close()
        self.metrics.close()


def _truncate_metrics(path: Path, keep_through_step: int) -> None:
    """Drop lines for steps after the resumed checkpoint (they were not kept, and will be redone)."""
    if not path.exists():
        return
    kept = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                if json.loads(line).get("step", 0) <= keep_through_step:
                    kept.append(line)
            except ValueError:
                continue
    atomic_write_text(path, "".join(kept))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The per-step records of a run (for notebooks and tests)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
