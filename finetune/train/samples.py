"""The sample grid: fixed prompts, fixed seeds, classifier-free guidance, drawn with the EMA weights.

Columns are prompts. Rows: the conditioning input when there is one (upsampler: the low-res image; inpainting:
the image with the erased region grey), the sample, and the reference image when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from data_pipeline.fsutil import atomic_write_bytes
from finetune.diffusion.guidance import classifier_free_guidance, cond_uncond_kwargs
from finetune.diffusion.samplers import force_known_pixels, sample


@dataclass
class GridSpec:
    prompts: list[str]
    references: list[np.ndarray] = field(default_factory=list)  # float CHW in [-1, 1]
    low_res: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)


def grid_spec(prompts: list[str], val: list[dict], super_res: bool, inpaint: bool) -> GridSpec:
    """Conditioning for the grid from the first validation samples (the upsampler and inpainting need images)."""
    spec = GridSpec(list(prompts))
    if super_res or inpaint:
        if len(val) < len(prompts):
            raise ValueError("the sample grid of an upsampler/inpainting model needs one validation image per prompt")
        chosen = val[: len(prompts)]
        spec.references = [s["image"] for s in chosen]
        if super_res:
            spec.low_res = [s["low_res"] for s in chosen]
        if inpaint:
            spec.masks = [s["inpaint_mask"] for s in chosen]
    return spec


def _to_uint8(batch: torch.Tensor) -> np.ndarray:
    return ((batch.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def draw_grid(
    model,
    diffusion,
    tokenizer,
    spec: GridSpec,
    *,
    guidance_scale: float,
    sampler: str,
    steps: str,
    seed: int,
    device: torch.device,
    autocast,
) -> np.ndarray:
    """Sample every prompt and return the grid as an HWC uint8 array."""
    n = len(spec.prompts)
    size = model.image_size
    tokens, mask = tokenizer.encode(spec.prompts)
    empty_tokens, empty_mask = tokenizer.empty(n)
    shared: dict = {}
    denoised_fn = None
    rows_above, rows_below = [], []
    if spec.references:
        reference = torch.from_numpy(np.stack(spec.references)).to(device)
        rows_below.append(reference)
    if spec.low_res:
        low_res = torch.from_numpy(np.stack(spec.low_res)).to(device)
        shared["low_res"] = low_res
        rows_above.append(torch.nn.functional.interpolate(low_res, size=(size, size), mode="nearest"))
    if spec.masks:
        known = torch.from_numpy(np.stack(spec.masks)).to(device)
        shared["inpaint_image"], shared["inpaint_mask"] = reference, known
        denoised_fn = force_known_pixels(reference, known)
        rows_above.append(reference * known)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    with autocast():
        cond = {"text_emb": model.encode_text(tokens.to(device), mask.to(device)), **shared}
        uncond = {"text_emb": model.encode_text(empty_tokens.to(device), empty_mask.to(device))}
        kwargs = cond_uncond_kwargs(cond, uncond)
        images = sample(
            None if diffusion is None else diffusion,
            classifier_free_guidance(model, guidance_scale),
            (n, 3, size, size),
            sampler=sampler,
            steps=steps,
            model_kwargs=kwargs,
            generator=generators,
            device=device,
            denoised_fn=denoised_fn,
        )
    rows = rows_above + [images] + rows_below
    tiles = [_to_uint8(r) for r in rows]
    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in tiles], axis=0)
    return grid


def save_png(path, grid: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if ok:
        atomic_write_bytes(path, buf.tobytes())
