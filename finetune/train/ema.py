"""Exponential moving average of the weights, kept in float32, swapped into the model for samples."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


class EMA:
    """`parameter_filter(name)` limits the average to some parameters (e.g. an adapter's: a frozen base never
    changes, and shadowing it would double its memory); the others keep their live values everywhere."""

    def __init__(self, model: torch.nn.Module, decay: float, parameter_filter: Callable[[str], bool] | None = None):
        self.decay = decay
        self.updates = 0
        self.shadow = {
            name: p.detach().float().clone()
            for name, p in model.named_parameters()
            if parameter_filter is None or parameter_filter(name)
        }

    def current_decay(self) -> float:
        # ramp-up so early EMA weights are not dominated by the initialisation
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.current_decay()
        names, shadows, params = [], [], []
        for name, p in model.named_parameters():
            if p.requires_grad and name in self.shadow:
                names.append(name)
                shadows.append(self.shadow[name])
                params.append(p.detach().float() if p.dtype != torch.float32 else p.detach())
        if shadows:
            torch._foreach_lerp_(shadows, params, 1.0 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's state_dict with the EMA weights in place of its parameters (buffers kept as they are)."""
        return {k: self.shadow.get(k, v) for k, v in model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameter(s), e.g. {sorted(missing)[0]}")
        for name, tensor in self.shadow.items():
            tensor.copy_(state[name])
        self.updates = updates

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """Temporarily give the model the EMA weights (for samples), restoring the trained ones afterwards."""
        params = {name: p for name, p in model.named_parameters() if name in self.shadow}
        backup = {}
        with torch.no_grad():
            for name, p in params.items():
                backup[name] = p.detach().clone()
                p.copy_(self.shadow[name].to(p.dtype))
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(backup[name])
