"""Prior-preservation images: what the base model draws for ordinary captions, drawn with finetune's own samplers
(finetune never imports sampling), so an adapter trained on them beside a new character keeps the rest of the
model's vocabulary."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from data_pipeline.fsutil import atomic_write_bytes
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
    loaded, prompts: Sequence[str], seeds: Sequence[int], batch_size: int = 16, guidance: float = defaults.GUIDANCE
) -> list[np.ndarray]:
    """The model's images (HWC uint8) for `prompts`; image i starts from the noise of `seeds[i]`."""
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
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start : start + batch_size]]
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


class PriorFolder:
    """Prior images kept between teach runs (what diffusers' DreamBooth calls the class data dir): an image is
    reused when the same model (by its id) drew the same caption from the same seed with the same guidance and
    sampler, so trying other training settings does not redraw them. Each image's file name is a hash of that
    recipe; anything else in the folder is ignored."""

    def __init__(self, path: Path, model_id: str, guidance: float, size: int):
        self.path, self.model_id, self.guidance, self.size = Path(path), model_id, float(guidance), size
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AdapterError(f"--prior-dir {path}: cannot create it ({exc.strerror})") from None

    def file_for(self, prompt: str, seed: int) -> Path:
        recipe = [self.model_id, prompt, int(seed), self.guidance, PRIOR_SAMPLER, PRIOR_STEPS, self.size]
        return self.path / f"prior-{hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:24]}.png"

    def load(self, prompt: str, seed: int) -> np.ndarray | None:
        """The kept image, or None when there is none (or it is unreadable or of another size)."""
        try:
            with Image.open(self.file_for(prompt, seed)) as image:
                if image.size != (self.size, self.size):
                    return None
                return np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
            return None

    def store(self, prompt: str, seed: int, image: np.ndarray) -> None:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        atomic_write_bytes(self.file_for(prompt, seed), buffer.getvalue())


def prior_images(loaded_model, prompts: Sequence[str], seed: int, guidance: float, folder: PriorFolder | None):
    """Image i of `prompts` from seed + i: taken from `folder` where it was drawn before, else drawn (and kept)."""
    seeds = [seed + i for i in range(len(prompts))]
    images = [folder.load(p, s) if folder else None for p, s in zip(prompts, seeds)]
    missing = [i for i, image in enumerate(images) if image is None]
    if missing:
        wanted = [prompts[i] for i in missing]
        drawn = draw_images(loaded_model(), wanted, [seeds[i] for i in missing], guidance=guidance)
        for i, image in zip(missing, drawn):
            images[i] = image
            if folder:
                folder.store(prompts[i], seeds[i], image)
    return images
