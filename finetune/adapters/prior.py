"""Prior-preservation images: what the base model draws for ordinary captions, drawn with finetune's own samplers
(finetune never imports sampling), so an adapter trained on them beside a new character keeps the rest of the
model's vocabulary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from data_pipeline.synthetic import World, make_caption, sample_attributes, sample_rng
from finetune.diffusion import defaults
from finetune.diffusion.gaussian_diffusion import diffusion_from_options
from finetune.diffusion.guidance import classifier_free_guidance, cond_uncond_kwargs
from finetune.diffusion.samplers import sample

from .errors import AdapterError

# The sampling defaults: the adapter learns to keep drawing what the model draws for ordinary captions, so the
# prior images should be as good as the model's best samples (the deterministic DPM-Solver++ leaves noise in a
# share of the bundled base's images, which an adapter then learns as the norm).
PRIOR_SAMPLER = defaults.SAMPLER
PRIOR_STEPS = defaults.STEPS[defaults.SAMPLER]
MAX_PROMPT_FILE_BYTES = 1 << 20


def world_captions(model_folder: Path, count: int, seed: int) -> list[str] | None:
    """`count` captions of the synthetic world the model was trained on (its provenance), or None when it records
    none."""
    provenance = model_folder / "provenance.json"
    try:
        world = json.loads(provenance.read_text(encoding="utf-8")).get("world")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(world, dict):
        return None
    try:
        world = World.from_dict(world)
    except (TypeError, ValueError):
        return None
    name_size = len(world.sizes) > 1
    captions = []
    for i in range(count):
        rng = sample_rng(seed, i)
        captions.append(make_caption(sample_attributes(world, rng), rng, name_size=name_size))
    return captions


def file_captions(path: Path, count: int) -> list[str]:
    """`count` captions cycled from a text file with one caption per line."""
    if not path.is_file():
        raise AdapterError(f"--prior-prompts {path}: no such file")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise AdapterError(f"--prior-prompts {path}: larger than {MAX_PROMPT_FILE_BYTES} bytes")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise AdapterError(f"--prior-prompts {path}: not UTF-8 text ({exc.reason})") from None
    if not lines:
        raise AdapterError(f"--prior-prompts {path}: no captions in it")
    return [lines[i % len(lines)] for i in range(count)]


@torch.no_grad()
def draw_images(
    loaded, prompts: Sequence[str], seed: int, batch_size: int = 16, guidance: float = defaults.GUIDANCE
) -> list[np.ndarray]:
    """The model's images (HWC uint8) for `prompts`; image i starts from seed + i."""
    model, tokenizer = loaded.model, loaded.tokenizer
    diffusion = diffusion_from_options(loaded.options, "")
    size = model.image_size
    images = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        tokens, mask = tokenizer.encode(chunk)
        empty_tokens, empty_mask = tokenizer.empty(len(chunk))
        kwargs = cond_uncond_kwargs(
            {"text_emb": model.encode_text(tokens, mask)}, {"text_emb": model.encode_text(empty_tokens, empty_mask)}
        )
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        x = sample(
            diffusion,
            classifier_free_guidance(model, guidance),
            (len(chunk), 3, size, size),
            sampler=PRIOR_SAMPLER,
            steps=PRIOR_STEPS,
            model_kwargs=kwargs,
            generator=generators,
            device=torch.device("cpu"),
        )
        images += list(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return images
