"""Inpainting inputs: an image and a mask (white = the region to fill, black = pixels to keep),
checked and brought to each stage's resolution as `KnownPixels`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from data_pipeline.errors import UserError

from .pipeline import KnownPixels


class InpaintInputError(UserError, ValueError):
    """An image or mask that cannot be used for inpainting."""


@dataclass
class InpaintInputs:
    image: Image.Image  # RGB
    fill: np.ndarray  # bool HxW, True where pixels are to be generated
    digest: str  # identifies image + mask in output parameters
    warnings: list[str] = field(default_factory=list)

    def at(self, size: int | tuple[int, int]) -> KnownPixels:
        """The known pixels at `size` (a side, or (height, width)); a pixel counts as known only if none of it is to
        be filled."""
        height, width = (size, size) if isinstance(size, int) else size
        upscaling = width > self.image.width or height > self.image.height
        image = self.image.resize((width, height), Image.Resampling.BICUBIC if upscaling else Image.Resampling.BOX)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        fill = Image.fromarray(self.fill.astype(np.uint8) * 255, "L").resize((width, height), Image.Resampling.BOX)
        known = torch.from_numpy((np.asarray(fill) == 0).astype(np.float32))[None, None]
        return KnownPixels(image=pixels.clamp(-1, 1), mask=known)


def _open(path: Path, what: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise InpaintInputError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InpaintInputError(f"{what} {path} is not a readable image: {exc}") from None


def load_inpaint_inputs(image_path: str | Path, mask_path: str | Path) -> InpaintInputs:
    image_path, mask_path = Path(image_path), Path(mask_path)
    image, mask = _open(image_path, "image"), _open(mask_path, "mask")
    if image.size != mask.size:
        raise InpaintInputError(
            f"the mask is {mask.width}x{mask.height} but the image is {image.width}x{image.height}; "
            "they must be the same size"
        )
    warnings = []
    if image.mode in ("RGBA", "LA", "P") and "A" in image.convert("RGBA").getbands():
        image = image.convert("RGBA")
        flat = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(flat, image)
    fill = np.asarray(mask.convert("L")) >= 128
    if not fill.any():
        raise InpaintInputError(f"the mask {mask_path} marks nothing to fill (white pixels are filled, black kept)")
    if fill.all():
        warnings.append("the mask covers the whole image: nothing is kept, this is plain generation")
    h = hashlib.sha256()
    for path in (image_path, mask_path):
        h.update(path.read_bytes())
    return InpaintInputs(image.convert("RGB"), fill, h.hexdigest()[:16], warnings)
