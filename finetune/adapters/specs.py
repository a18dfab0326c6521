"""`PATH[:SCALE]` arguments naming an adapter and how strongly to apply it, shared by every command line."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import AdapterError

DEFAULT_SCALE = 1.0
MAX_ABS_SCALE = 10.0  # scales past ~2 already wreck images; a larger one is a typo


@dataclass(frozen=True)
class AdapterSpec:
    path: Path
    scale: float = DEFAULT_SCALE

    def __str__(self) -> str:
        return f"{self.path}:{self.scale:g}"


def check_scale(scale: float, what: str = "adapter scale") -> float:
    if not math.isfinite(scale) or abs(scale) > MAX_ABS_SCALE:
        raise AdapterError(f"{what} {scale!r} must be a finite number in [-{MAX_ABS_SCALE:g}, {MAX_ABS_SCALE:g}]")
    return float(scale)


def parse_adapter_spec(text: str) -> AdapterSpec:
    """'PATH' (scale 1) or 'PATH:SCALE'. A path that exists as written wins, so folder names with colons work."""
    if not text:
        raise AdapterError("empty adapter argument; expected PATH or PATH:SCALE")
    if Path(text).expanduser().exists():
        return AdapterSpec(Path(text).expanduser())
    path, sep, scale_text = text.rpartition(":")
    if not sep:
        return AdapterSpec(Path(text).expanduser())
    try:
        scale = float(scale_text)
    except ValueError:
        raise AdapterError(f"adapter argument {text!r}: {scale_text!r} is not a number; expected PATH:SCALE") from None
    if not path:
        raise AdapterError(f"adapter argument {text!r} has no path; expected PATH:SCALE")
    return AdapterSpec(Path(path).expanduser(), check_scale(scale, f"adapter argument {text!r}: scale"))


def adapter_spec_argument(text: str) -> AdapterSpec:
    """`type=` for argparse: a bad PATH:SCALE becomes argparse's one-line usage error."""
    try:
        return parse_adapter_spec(text)
    except AdapterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
