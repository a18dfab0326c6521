"""Step guards: skip steps with a non-finite loss or gradient (stop after K in a row), and optionally skip
loss spikes far above the recent median. Their state is saved in checkpoints so a resumed run decides alike."""

from __future__ import annotations

import math
from collections import deque

from data_pipeline.errors import UserError


class TrainingDiverged(UserError, RuntimeError):
    """Too many consecutive non-finite steps: the settings (learning rate, precision, data) need a change."""


class StepGuard:
    def __init__(self, max_consecutive_nonfinite: int, spike_factor: float = 0.0, spike_window: int = 100):
        self.max_nonfinite = max_consecutive_nonfinite
        self.spike_factor = spike_factor
        self.recent: deque[float] = deque(maxlen=spike_window)
        self.nonfinite_streak = 0
        self.skipped_nonfinite = 0
        self.skipped_spikes = 0

    def check(self, step: int, loss: float, grad_norm: float) -> str | None:
        """None if the step may be applied, else the reason it is skipped. Raises after too many bad steps."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.nonfinite_streak += 1
            self.skipped_nonfinite += 1
            if self.nonfinite_streak >= self.max_nonfinite:
                raise TrainingDiverged(
                    f"training stopped at step {step}: {self.nonfinite_streak} steps in a row had a non-finite loss "
                    f"or gradient (last loss {loss}, grad norm {grad_norm}). Try a lower --lr, --max-grad-norm, "
                    f"--mixed-precision bf16 instead of fp16, or resume from an earlier checkpoint."
                )
            return "nonfinite"
        self.nonfinite_streak = 0
        if self.spike_factor and len(self.recent) >= max(5, self.recent.maxlen // 2):
            median = sorted(self.recent)[len(self.recent) // 2]
            if loss > self.spike_factor * median:
                self.skipped_spikes += 1
                return "spike"
        self.recent.append(loss)
        return None

    def state_dict(self) -> dict:
        return {
            "recent": list(self.recent),
            "nonfinite_streak": self.nonfinite_streak,
            "skipped_nonfinite": self.skipped_nonfinite,
            "skipped_spikes": self.skipped_spikes,
        }

    def load_state_dict(self, state: dict) -> None:
        self.recent.clear()
        self.recent.extend(state.get("recent", []))
        self.nonfinite_streak = int(state.get("nonfinite_streak", 0))
        self.skipped_nonfinite = int(state.get("skipped_nonfinite", 0))
        self.skipped_spikes = int(state.get("skipped_spikes", 0))


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based): linear warmup, then the schedule."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)
