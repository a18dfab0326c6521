"""Text → image: the base stage with classifier-free guidance, then the optional upsampler stage.

Each image has its own seed: one `torch.Generator` per image drives its starting noise and every
random draw after it (base, then upsampler), so an image does not depend on what else is in its
batch. Captions are encoded once per image with `model.encode_text`, not once per step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from tqdm.auto import tqdm

from finetune.diffusion.gaussian_diffusion import diffusion_from_options
from finetune.diffusion.guidance import classifier_free_guidance, cond_uncond_kwargs
from finetune.diffusion.samplers import force_known_pixels, sample

from .adapters import adapter_metadata, apply_to_models
from .devices import autocast, dtype_name
from .loading import ModelPair, SamplingModel
from .placement import Placement, placement_names
from .regions import RegionalCaptions, regional_guidance, split_pair_caption
from .settings import BASE_DEFAULTS, UPSAMPLER_DEFAULTS, SamplerSettings, SettingsError
from .shapes import Shape, check_base_shape, default_shape, output_shape

MAX_SEED = 2**63 - 1


@dataclass
class KnownPixels:
    """Inpainting input at one resolution: `image` [1,3,H,W] in [-1, 1] and `mask` [1,1,H,W] with
    1 where the pixel is known (kept) and 0 where it is to be filled."""

    image: torch.Tensor
    mask: torch.Tensor


@dataclass
class GeneratedImage:
    prompt: str
    seed: int
    image: Image.Image
    base_image: Image.Image
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)


def tensor_to_images(batch: torch.Tensor) -> list[Image.Image]:
    """A batch in [-1, 1] (B x 3 x H x W) as 8-bit RGB PIL images."""
    pixels = ((batch.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(p.permute(1, 2, 0).cpu().numpy(), "RGB") for p in pixels]


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """What the base output looks like once saved as 8-bit pixels (the upsampler's low_res input)."""
    return ((x + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1


def upsampled_low_res(low_res: torch.Tensor, size: int | Shape) -> torch.Tensor:
    """The low-res image at the upsampler's size (a side, or (height, width)), resized as the model itself resizes
    its low_res input."""
    shape = (size, size) if isinstance(size, int) else tuple(size)
    return torch.nn.functional.interpolate(low_res.float(), shape, mode="bilinear", align_corners=False)


def encode_captions(
    sm: SamplingModel, captions: Sequence[str], device: torch.device, dtype: torch.dtype
) -> tuple[object, list[bool]]:
    """The model's text embedding of `captions` (encoded once) and which captions were truncated."""
    tokens, mask, truncated = sm.tokenizer.encode(list(captions), return_truncated=True)
    with torch.no_grad(), autocast(device, dtype):
        return sm.model.encode_text(tokens.to(device), mask.to(device)), list(truncated)


def _empty_embedding(sm: SamplingModel, n: int, device: torch.device, dtype: torch.dtype):
    tokens, mask = sm.tokenizer.empty(n)
    with torch.no_grad(), autocast(device, dtype):
        return sm.model.encode_text(tokens.to(device), mask.to(device))


def _autocast_model(sm: SamplingModel, device: torch.device, dtype: torch.dtype):
    def forward(x, t, **kwargs):
        with autocast(device, dtype):
            return sm.model(x, t, **kwargs)

    return forward


def lays_out(settings: SamplerSettings, low_res, known) -> bool:
    """Whether the stage takes its layout from the captions (placement and regions): only a text-to-image base stage
    with placement on (an upsampler follows its low-res input, inpainting its known pixels)."""
    return settings.placement and low_res is None and known is None


def stage_placement(
    settings: SamplerSettings, prompts: Sequence[str], low_res, known, num_timesteps: int
) -> Placement | None:
    """The subject placement of a stage (only one that `lays_out`)."""
    return Placement.from_captions(prompts, num_timesteps) if lays_out(settings, low_res, known) else None


def stage_regions(settings: SamplerSettings, prompts: Sequence[str], low_res, known) -> RegionalCaptions | None:
    """The regional guidance of a stage: where placement decides the layout, two subjects at two places are each
    guided by a caption of their own (`sampling.regions`)."""
    regions = RegionalCaptions(prompts) if lays_out(settings, low_res, known) else None
    return regions or None


def run_stage(
    sm: SamplingModel,
    settings: SamplerSettings,
    prompts: Sequence[str],
    generators: list[torch.Generator],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    *,
    low_res: torch.Tensor | None = None,
    known: KnownPixels | None = None,
    progress: bool = False,
    shape: Shape | None = None,
) -> tuple[torch.Tensor, list[bool]]:
    """Sample one stage for a batch at `shape` (height, width; default the model's square size); returns images
    in [-1, 1] and the truncated-caption flags."""
    batch = len(prompts)
    extra: dict = {}
    if low_res is not None:
        extra["low_res"] = low_res
    denoised_fn = None
    if known is not None:
        if sm.is_inpainting:
            extra["inpaint_image"] = known.image.expand(batch, -1, -1, -1).to(device)
            extra["inpaint_mask"] = known.mask.expand(batch, -1, -1, -1).to(device)
        # GLIDE's method: every predicted x0 is overwritten with the known pixels.
        denoised_fn = force_known_pixels(known.image.to(device), known.mask.to(device))
    truncated = [False] * batch
    model_fn = _autocast_model(sm, device, dtype)
    height, width = shape or (sm.image_size, sm.image_size)
    if sm.options.get("xf_width"):
        regions = stage_regions(settings, prompts, low_res, known)
        captions = regions.conditional_captions(prompts) if regions else prompts
        text_emb, cut = encode_captions(sm, captions, device, dtype)
        truncated = cut[:batch]
        if regions:
            for row, second_cut in zip(regions.rows, cut[batch:]):
                truncated[row] = truncated[row] or second_cut
        cond = {"text_emb": text_emb, **extra}
        if settings.guided:
            kwargs = cond_uncond_kwargs(cond, {"text_emb": _empty_embedding(sm, batch, device, dtype)})
        else:
            kwargs = cond
        scale = float(settings.guidance) if settings.guided else None
        if regions:
            model_fn = regional_guidance(model_fn, scale, regions, height, width)
        elif scale is not None:
            model_fn = classifier_free_guidance(model_fn, scale)
    else:
        kwargs = extra
    start = {}
    if settings.start_step and low_res is not None:
        start = {
            "start_image": upsampled_low_res(low_res, (height, width)).to(device),
            "start_step": settings.start_step,
        }
    diffusion = diffusion_from_options(sm.options, timestep_respacing="")
    x = sample(
        diffusion,
        model_fn,
        (batch, 3, height, width),
        sampler=settings.sampler,
        steps=settings.steps,
        eta=settings.eta,
        model_kwargs=kwargs,
        generator=generators,
        temperature=settings.temperature,
        clip_denoised=True,
        denoised_fn=denoised_fn,
        device=device,
        progress=progress,
        steer=stage_placement(settings, prompts, low_res, known, diffusion.num_timesteps),
        **start,
    )
    return x, truncated


class TextToImage:
    """A base model and an optional upsampler with their sampler settings, on one device."""

    def __init__(
        self,
        models: ModelPair,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        base: SamplerSettings = BASE_DEFAULTS,
        upsampler: SamplerSettings = UPSAMPLER_DEFAULTS,
    ):
        self.models, self.device, self.dtype = models, device, dtype
        self.base_settings = base.check(diffusion_from_options(models.base.options, "").num_timesteps, "base")
        self.up_settings = None
        if models.upsampler is not None:
            up_steps = diffusion_from_options(models.upsampler.options, "").num_timesteps
            self.up_settings = upsampler.check(up_steps, "upsampler")

    @property
    def output_size(self) -> int:
        return (self.models.upsampler or self.models.base).image_size

    @property
    def model_id(self) -> str:
        """The weights' ids; the adapters applied to them are a parameter of their own (`adapters`)."""
        up = self.models.upsampler
        return self.models.base.model_id + (f"+{up.model_id}" if up else "")

    @property
    def adapters(self) -> list[dict]:
        return adapter_metadata(self.models)

    def set_adapters(self, specs) -> None:
        """Apply LoRA adapters (`AdapterSpec`s; each to the model it was trained on), replacing earlier ones; an
        empty list restores the models. The models are shared: every pipeline over them samples with these."""
        apply_to_models(self.models, specs)

    def parameters(self, prompt: str, seed: int, shape: Shape | None = None, inpainting: bool = False) -> dict:
        """Everything that determines an image; stored in its PNG and compared on reruns. `shape`: the base-stage
        (height, width) when not the model's square size; the output's [height, width] is then recorded as size.
        `inpainting`: the image is drawn around known pixels (no subject placement)."""
        b = self.base_settings
        params = {
            "prompt": prompt,
            "seed": int(seed),
            "guidance": b.guidance,
            "sampler": b.sampler,
            "steps": b.steps,
            "eta": b.eta,
            "model": self.model_id,
            "size": self._size_parameter(shape),
            "precision": dtype_name(self.dtype),
            "upsampler": None,
        }
        if self.adapters:  # only when used, so that earlier outputs made without adapters still match
            params["adapters"] = self.adapters
        placed = placement_names(prompt) if b.placement and not inpainting else []
        if placed:  # likewise: only where subjects are moved (one place as a name, as before pairs were placed)
            params["placement"] = placed[0] if len(placed) == 1 else placed
            split = split_pair_caption(prompt) if len(placed) == 2 else None
            if split is not None:  # each subject guided by its own caption (sampling.regions)
                params["regions"] = [caption for caption, _ in split]
        if self.up_settings is not None:
            u = self.up_settings
            params["upsampler"] = {
                "sampler": u.sampler,
                "steps": u.steps,
                "guidance": u.guidance,
                "eta": u.eta,
                "temperature": u.temperature,
                "start_step": u.start_step,
            }
        return params

    def _size_parameter(self, shape: Shape | None) -> int | list[int]:
        if shape is None or tuple(shape) == default_shape(self.models):
            return self.output_size  # as before shapes existed, so square outputs of earlier runs still match
        return list(output_shape(self.models, check_base_shape(self.models, shape)))

    def generate_batches(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        batch_size: int = 4,
        known: tuple[KnownPixels, KnownPixels | None] | None = None,
        progress: bool = True,
        shape: Shape | None = None,
    ) -> Iterator[list[GeneratedImage]]:
        """Yield the images batch by batch (so callers can save as they go).

        `known`: inpainting input at the base resolution and, when an upsampler is used, at its resolution.
        `shape`: the base stage's (height, width) (see `sampling.shapes`); the upsampler scales both sides.
        """
        shape = check_base_shape(self.models, shape) if shape is not None else None
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if batch_size < 1:
            raise SettingsError(f"batch size must be at least 1, got {batch_size}")
        for seed in seeds:
            if not 0 <= int(seed) <= MAX_SEED:
                raise SettingsError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
        bar = tqdm(total=len(prompts), desc="images", unit="img", disable=not progress)
        try:
            for start in range(0, len(prompts), batch_size):
                chunk = list(prompts[start : start + batch_size])
                chunk_seeds = [int(s) for s in seeds[start : start + batch_size]]
                yield self._generate_batch(chunk, chunk_seeds, known, progress, shape)
                bar.update(len(chunk))
        finally:
            bar.close()

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        batch_size: int = 4,
        known: tuple[KnownPixels, KnownPixels | None] | None = None,
        progress: bool = True,
        shape: Shape | None = None,
    ) -> list[GeneratedImage]:
        batches = self.generate_batches(prompts, seeds, batch_size, known, progress, shape)
        return [image for batch in batches for image in batch]

    def _generate_batch(
        self, prompts: list[str], seeds: list[int], known, progress: bool, shape: Shape | None = None
    ) -> list[GeneratedImage]:
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        base_known, up_known = known if known is not None else (None, None)
        x, truncated = run_stage(
            self.models.base,
            self.base_settings,
            prompts,
            generators,
            self.device,
            self.dtype,
            known=base_known,
            progress=progress,
            shape=shape,
        )
        base_images = tensor_to_images(x)
        final = base_images
        if self.models.upsampler is not None:
            up, up_truncated = run_stage(
                self.models.upsampler,
                self.up_settings,
                prompts,
                generators,
                self.device,
                self.dtype,
                low_res=quantize_8bit(x),
                known=up_known,
                progress=progress,
                shape=output_shape(self.models, shape) if shape is not None else None,
            )
            truncated = [a or b for a, b in zip(truncated, up_truncated)]
            final = tensor_to_images(up)
        results = []
        for prompt, seed, image, base_image, cut in zip(prompts, seeds, final, base_images, truncated):
            warnings = []
            if cut:
                shown = prompt if len(prompt) <= 80 else f"{prompt[:38]}…{prompt[-38:]}"
                warnings.append(
                    f"caption longer than the model's context ({self.models.base.text_ctx} tokens) "
                    f"was truncated: {shown!r}"
                )
            results.append(GeneratedImage(prompt, seed, image, base_image, cut, warnings))
        return results
