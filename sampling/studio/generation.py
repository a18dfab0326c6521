"""Turning a list of captions into panels, a strip and a page for the Generate tab."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from PIL import Image

from data_pipeline.errors import UserError
from finetune.adapters.errors import AdapterError
from finetune.diffusion import defaults
from finetune.hub import no_downloads

from ..adapters import adapter_metadata, apply_to_models, specs_from
from ..comic.page import compose_page
from ..comic.panel_shapes import generate_in_shapes, page_panel_shapes
from ..comic.script import Layout, Page, Panel
from ..devices import resolve_device
from ..loading import BUNDLED_NAME, ModelLoadError, ModelPair, load_models
from ..outputs import save_image, slugify
from ..pipeline import TextToImage
from ..settings import UPSAMPLER_DEFAULTS, SamplerSettings
from .comic_page import DEFAULT_OPTIONS, PageOptions, export_page, studio_page, studio_style
from .settings import GenerateSettings, steps_spec


@dataclass
class StripResult:
    """What one strip generation wrote: panel files, the strip and page images, and the settings used."""

    panels: list[Path]
    strip: Path
    page: Path
    captions: list[str]
    settings: GenerateSettings
    model: str
    messages: list[str] = field(default_factory=list)
    exports: list[Path] = field(default_factory=list)  # PDF / CBZ / webtoon of the page, as asked
    adapters: list[dict] = field(default_factory=list)  # the adapters applied: path, id, scale, model
    options: PageOptions = DEFAULT_OPTIONS  # the page's layout, reading order and export formats

    @property
    def params(self) -> dict:
        adapters = {"adapters": self.adapters} if self.adapters else {}
        return {"model": self.model, "captions": self.captions, **self.settings.to_dict(), **adapters}


class GenerationError(UserError, RuntimeError):
    """The strip cannot be made (model not loadable, sampling failed); the message is for the user."""


class Generator:
    """Loads models on demand (kept for the next request) and samples panels with per-panel seeds."""

    def __init__(self, device: str = "auto"):
        try:
            self.device = resolve_device(device)
        except ValueError as exc:
            raise GenerationError(str(exc)) from exc
        self._pairs: dict[tuple[str, bool], ModelPair] = {}
        # Held while a strip samples too: the adapters are applied to the shared models for that strip alone.
        self._lock = threading.RLock()

    def models(self, choice: str, upsample: bool) -> ModelPair:
        key = (choice, upsample)
        with self._lock:
            if key not in self._pairs:
                try:
                    with no_downloads():  # a cached model's name resolves in the cache, or fails: never fetched
                        pair = load_models(
                            None if choice == BUNDLED_NAME else choice, self.device, use_upsampler=upsample
                        )
                except (ModelLoadError, FileNotFoundError, ValueError) as exc:
                    raise GenerationError(f"cannot load model {choice!r}: {exc}") from exc
                if upsample and pair.upsampler is None:
                    raise GenerationError(f"model {choice!r} has no upsampler; untick 'Upsample'")
                self._pairs = {key: pair}  # keep one pair: models are large
            return self._pairs[key]

    def use_adapters(self, pair: ModelPair, adapters) -> list[dict]:
        """Apply [(folder, scale)] to the pair (none: restore it); their metadata. Call with the lock held."""
        try:
            apply_to_models(pair, specs_from(adapters))
        except AdapterError as exc:
            message = str(exc)
            for folder, _ in adapters:
                message = message.replace(str(folder), Path(folder).name)  # names, not the server's paths
            raise GenerationError(message) from exc
        return adapter_metadata(pair)

    def panels(
        self, choice: str, prompts: list[str], settings: GenerateSettings, page: Page | None = None, adapters=()
    ) -> tuple[list[Image.Image], str, list[str], list[dict]]:
        """Images for ``prompts`` (panel i uses seed + i), each at its box's shape on `page` when given, with
        `adapters` [(folder, scale)] applied; the model id, warnings (e.g. truncated captions) and the adapters."""
        with self._lock:
            pair = self.models(choice, settings.upsample)
            applied = self.use_adapters(pair, adapters)
            images, model_id, notes = self._sample(pair, prompts, settings, page)
        return images, model_id, notes, applied

    def _sample(self, pair: ModelPair, prompts: list[str], settings: GenerateSettings, page: Page | None):
        steps = steps_spec(defaults.STEPS[settings.sampler], settings.steps)
        base = SamplerSettings(
            sampler=settings.sampler, steps=steps, guidance=settings.guidance, placement=settings.placement
        )
        upsampler = replace(UPSAMPLER_DEFAULTS, steps=steps_spec(UPSAMPLER_DEFAULTS.steps, settings.upsample_steps))
        try:
            pipeline = TextToImage(pair, self.device, base=base, upsampler=upsampler)
        except ValueError as exc:
            raise GenerationError(str(exc)) from exc
        seeds = [settings.seed + i for i in range(len(prompts))]
        shapes = page_panel_shapes(page, studio_style(pair), pair) if page else [None] * len(prompts)
        batches = generate_in_shapes(pipeline, prompts, seeds, shapes, batch_size=len(prompts), progress=False)
        images = [image for batch in batches for image in batch]
        return [g.image for g in images], pipeline.model_id, [w for g in images for w in g.warnings]

    def strip(
        self,
        choice: str,
        captions: list[str],
        settings: GenerateSettings,
        out_dir: Path,
        options=DEFAULT_OPTIONS,
        adapters=(),
    ):
        page = studio_page(captions, options)
        try:
            images, model_id, notes, applied = self.panels(choice, captions, settings, page, adapters)
        except GenerationError:
            raise
        except (RuntimeError, ValueError) as exc:  # shapes, out of memory, sampler arguments
            raise GenerationError(f"sampling failed: {exc}") from exc
        out_dir = Path(out_dir)
        paths = []
        for number, (caption, image) in enumerate(zip(captions, images), 1):
            params = {
                "prompt": caption,
                "seed": settings.seed + number - 1,
                "guidance": settings.guidance,
                "sampler": settings.sampler,
                "steps": settings.steps,
                "model": model_id,
                "upsample": settings.upsample,
                **({"adapters": applied} if applied else {}),
            }
            paths.append(save_image(out_dir / f"panel-{number:02d}-{slugify(caption)}.png", image, params))
        panels = tuple(Panel(caption=c) for c in captions)
        style = studio_style(self.models(choice, settings.upsample))
        strip_image, _, _ = compose_page(Page(None, Layout(1, len(captions)), panels), images, style)
        # The page tells the story: each caption lettered in its panel's narration box.
        page_image, page_layout, warnings = compose_page(page, images, style)
        common = {"captions": captions, "model": model_id, **settings.to_dict()}
        if applied:
            common["adapters"] = applied
        strip_path = save_image(out_dir / "strip.png", strip_image, {**common, "kind": "strip"})
        page_path = save_image(out_dir / "page.png", page_image, {**common, "kind": "page", **asdict(options)})
        exports = export_page(out_dir, page_path, page_layout, " / ".join(captions)[:120], options)
        return StripResult(
            panels=paths,
            strip=strip_path,
            page=page_path,
            captions=captions,
            settings=settings,
            model=model_id,
            messages=notes + list(warnings),
            exports=exports,
            adapters=applied,
            options=options,
        )
