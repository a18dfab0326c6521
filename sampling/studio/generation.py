"""Turning a list of captions into panels, a strip and a page for the Generate tab."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..comic.page import PageStyle, compose_page
from ..comic.script import Layout, Page, Panel, default_layout
from ..devices import resolve_device
from ..loading import ModelLoadError, ModelPair, load_models
from ..outputs import save_image, slugify
from .models import BUNDLED
from .settings import GenerateSettings

UPSAMPLER_TEMPERATURE = 0.997  # GLIDE's: scales only the upsampler's starting noise


class GenerationError(RuntimeError):
    """The strip cannot be made (model not loadable, sampling failed); the message is for the user."""


def _to_images(batch: torch.Tensor) -> list[Image.Image]:
    pixels = ((batch.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(p.permute(1, 2, 0).cpu().numpy(), "RGB") for p in pixels]


def _guided_model_fn(model, text_emb, scale: float):
    """Classifier-free guidance: the batch holds [conditional; empty-caption] halves in one forward."""

    def model_fn(x, t, **_):
        out = model(torch.cat([x, x]), torch.cat([t, t]), text_emb=text_emb)
        channels = x.shape[1]
        cond, uncond = out[: len(x)], out[len(x):]
        eps = uncond[:, :channels] + scale * (cond[:, :channels] - uncond[:, :channels])
        return torch.cat([eps, cond[:, channels:]], dim=1)

    return model_fn


class Generator:
    """Loads models on demand (kept for the next request) and samples panels with per-panel seeds."""

    def __init__(self, device: str = "auto"):
        try:
            self.device = resolve_device(device)
        except ValueError as exc:
            raise GenerationError(str(exc)) from exc
        self._pairs: dict[tuple[str, bool], ModelPair] = {}
        self._lock = threading.Lock()

    def models(self, choice: str, upsample: bool) -> ModelPair:
        key = (choice, upsample)
        with self._lock:
            if key not in self._pairs:
                try:
                    pair = load_models(None if choice == BUNDLED else choice, self.device, use_upsampler=upsample)
                except (ModelLoadError, FileNotFoundError, ValueError) as exc:
                    raise GenerationError(f"cannot load model {choice!r}: {exc}") from exc
                if upsample and pair.upsampler is None:
                    raise GenerationError(f"model {choice!r} has no upsampler; untick 'Upsample'")
                self._pairs = {key: pair}  # keep one pair: models are large
            return self._pairs[key]

    @torch.no_grad()
    def panels(self, choice: str, prompts: list[str], settings: GenerateSettings) -> tuple[list[Image.Image], str]:
        from finetune.diffusion.gaussian_diffusion import diffusion_from_options
        from finetune.diffusion.samplers import sample

        pair = self.models(choice, settings.upsample)
        base = pair.base
        tokens, mask = base.tokenizer.encode(prompts)
        empty_tokens, empty_mask = base.tokenizer.empty(len(prompts))
        text_emb = base.model.encode_text(
            torch.cat([tokens, empty_tokens]).to(self.device), torch.cat([mask, empty_mask]).to(self.device)
        )
        size = base.image_size
        seeds = [settings.seed + i for i in range(len(prompts))]
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        images = sample(
            diffusion_from_options(base.options, timestep_respacing=""),
            _guided_model_fn(base.model, text_emb, settings.guidance),
            (len(prompts), 3, size, size),
            sampler=settings.sampler,
            steps=settings.steps,
            generator=generators,
            clip_denoised=True,
        )
        model_id = base.model_id
        if settings.upsample:
            up = pair.upsampler
            low_res = ((images + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1  # 8-bit, as the base would be saved
            up_tokens, up_mask = up.tokenizer.encode(prompts)
            up_emb = up.model.encode_text(up_tokens.to(self.device), up_mask.to(self.device))

            def up_fn(x, t, **_):
                return up.model(x, t, text_emb=up_emb, low_res=low_res)

            big = up.image_size
            respacing = "fast27" if settings.upsample_steps == 27 else str(settings.upsample_steps)
            images = sample(
                diffusion_from_options(up.options, timestep_respacing=""),
                up_fn,
                (len(prompts), 3, big, big),
                sampler="ddim",
                steps=respacing,
                generator=[torch.Generator().manual_seed(s) for s in seeds],
                temperature=UPSAMPLER_TEMPERATURE,
                clip_denoised=True,
            )
            model_id = f"{base.model_id}+{up.model_id}"
        return _to_images(images), model_id

    def strip(self, choice: str, captions: list[str], settings: GenerateSettings, out_dir: Path):
        from .service import StripResult

        try:
            images, model_id = self.panels(choice, captions, settings)
        except GenerationError:
            raise
        except (RuntimeError, ValueError) as exc:  # shapes, out of memory, sampler arguments
            raise GenerationError(f"sampling failed: {exc}") from exc
        out_dir = Path(out_dir)
        paths = []
        for number, (caption, image) in enumerate(zip(captions, images), 1):
            params = {"prompt": caption, "seed": settings.seed + number - 1, "guidance": settings.guidance,
                      "sampler": settings.sampler, "steps": settings.steps, "model": model_id,
                      "upsample": settings.upsample}
            paths.append(save_image(out_dir / f"panel-{number:02d}-{slugify(caption)}.png", image, params))
        panels = tuple(Panel(caption=c) for c in captions)
        style = PageStyle(panel_px=max(128, min(320, images[0].width * 2)))
        strip_image, _, _ = compose_page(Page(None, Layout(1, len(captions)), panels), images, style)
        # The page tells the story: each caption lettered in its panel's narration box.
        page_panels = tuple(Panel(caption=c, narration=c) for c in captions)
        page_image, _, warnings = compose_page(Page(None, default_layout(len(captions)), page_panels), images, style)
        common = {"captions": captions, "model": model_id, **settings.to_dict()}
        strip_path = save_image(out_dir / "strip.png", strip_image, {**common, "kind": "strip"})
        page_path = save_image(out_dir / "page.png", page_image, {**common, "kind": "page"})
        return StripResult(panels=paths, strip=strip_path, page=page_path, captions=captions, settings=settings,
                           model=model_id, messages=list(warnings))
