"""Regional guidance for captions with two subjects at two places ("a cat in the top left and a robot in the bottom
right on a pink background"): each subject is guided by a caption of its own, in its own half of the picture.

Why: a small text-conditioned UNet that has learned "a cat" and "a robot" one at a time binds names to subjects
poorly when one caption names both: it draws two subjects but often the same one twice (the bundled emoji base:
singles right 94%, pairs 3-9%, docs/quality/README.md). Split into "a cat in the top left on a pink background" and
"a robot in the bottom right on a pink background", each is a caption the model knows. The conditional prediction
of every pixel is then taken from the caption of the place it is nearer to (with a soft boundary along the bisector
of the two places), and classifier-free guidance is applied to that mixture as usual. Subject
placement (`sampling.placement`) moves the two subjects onto their places meanwhile, so each grows under its own
caption. A caption that is not of the form "<subject> <place>, and <subject> <place> <rest>" is guided as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from data_pipeline.synthetic.world import POSITIONS
from finetune.diffusion.guidance import guided_output

from .placement import position_spans

# How soft the boundary between the halves is: the first caption's weight is sigmoid((distance to the second place
# - distance to the first) / (SOFTNESS * diagonal)). Measured at the emoji base's step 9,000 (32 pairs, guidance 3):
# 0.0025 59% of pairs right, 0.015 69%, 0.05 75%, 0.1 69%.
SOFTNESS = 0.05
_CONJUNCTION = re.compile(r"\s*(?:,\s*and|and|,)\s+")


def split_pair_caption(caption: str) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """The two single-subject captions of a caption naming two places as "<A> <place A> and <B> <place B> <rest>",
    each with the rest ("on a pink background"), paired with its place; None for any other caption."""
    spans = position_spans(caption)
    if len(spans) != 2 or len(caption.lower()) != len(caption):  # the spans index the lower-cased caption
        return None
    (_, end_a, place_a), (start_b, end_b, place_b) = spans
    joint = _CONJUNCTION.match(caption, end_a)
    if joint is None or joint.end() >= start_b:
        return None  # nothing names the second subject between the conjunction and its place
    rest = caption[end_b:]
    first, second = caption[:end_a] + rest, caption[joint.end() : end_b] + rest
    if not first.strip() or not second.strip():
        return None
    return (first.strip(), place_a), (second.strip(), place_b)


def half_masks(places: Sequence[tuple[str, str]], height: int, width: int) -> torch.Tensor:
    """[2, 1, H, W] weights of the two places' captions at every pixel: 1 near the first place, 0 near the second,
    with a soft edge along their bisector; the two masks sum to 1."""
    (ax, ay), (bx, by) = (POSITIONS[name] for _, name in places)
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float32) + 0.5, torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij"
    )
    a = torch.hypot(x - ax * width, y - ay * height)
    b = torch.hypot(x - bx * width, y - by * height)
    first = torch.sigmoid((b - a) / (SOFTNESS * float(np.hypot(height, width))))
    return torch.stack([first, 1 - first])[:, None]


class RegionalCaptions:
    """Which images of a batch are guided by regions: their rows and their splits ((caption, place) for each half)."""

    def __init__(self, captions: Sequence[str]):
        self.rows: list[int] = []
        self.splits: list[tuple[tuple[str, str], tuple[str, str]]] = []
        for row, caption in enumerate(captions):
            split = split_pair_caption(caption)
            if split is not None:
                self.rows.append(row)
                self.splits.append(split)

    def __bool__(self) -> bool:
        return bool(self.rows)

    def conditional_captions(self, captions: Sequence[str]) -> list[str]:
        """The batch's captions with each regional image's caption replaced by its first half's, then the second
        halves' captions appended: the conditional rows `regional_guidance` expects."""
        out = list(captions)
        for row, (first, _) in zip(self.rows, self.splits):
            out[row] = first[0]
        return out + [second[0] for _, second in self.splits]

    def masks(self, height: int, width: int) -> torch.Tensor:
        """[R, 1, H, W]: the first caption's weight for each regional image."""
        return torch.stack([half_masks(split, height, width)[0] for split in self.splits])


def regional_guidance(model, guidance_scale: float | None, regions: RegionalCaptions, height: int, width: int):
    """A sampler `model_fn` over B images whose kwargs hold B + R conditional rows (see
    `RegionalCaptions.conditional_captions`) and, when guided, B unconditional rows after them. Each regional
    image's conditional prediction mixes its two captions' by `masks`; then eps = uncond + scale * (cond - uncond)
    (no guidance: the mixed conditional prediction), with the mixed conditional variance channels."""
    rows = torch.tensor(regions.rows, dtype=torch.long)
    weights = regions.masks(height, width)
    extra = len(regions.rows)

    def guided(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        batch, channels = x.shape[:2]
        parts_x = [x, x[rows]] + ([x] if guidance_scale is not None else [])
        parts_t = [t, t[rows]] + ([t] if guidance_scale is not None else [])
        out = model(torch.cat(parts_x), torch.cat(parts_t), **kwargs)
        if isinstance(out, tuple):
            out = out[0]
        cond = out[:batch].clone()
        w = weights.to(out.device, out.dtype)
        cond[rows] = w * out[:batch][rows] + (1 - w) * out[batch : batch + extra]
        if guidance_scale is None:
            return cond
        return guided_output(cond, out[batch + extra :], guidance_scale, channels)

    if hasattr(model, "parameters"):
        guided.parameters = model.parameters
    return guided
