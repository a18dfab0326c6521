"""Per-sample preparation: crop to the model size, choose a caption, make the upsampler's low-res input and the
inpainting mask. Training samples are random (from a per-sample generator, so they replay exactly on resume);
validation samples are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .masks import random_mask


def _resize(rgb: np.ndarray, size: int, width: int | None = None) -> np.ndarray:
    """To size x size, or to `width` wide and `size` high."""
    width = width or size
    if rgb.shape[0] == size and rgb.shape[1] == width:
        return np.ascontiguousarray(rgb)
    interp = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(rgb, (width, size), interpolation=interp)


def to_unit_range(rgb: np.ndarray) -> np.ndarray:
    """uint8 HWC -> float32 CHW in [-1, 1]."""
    return (rgb.astype(np.float32).transpose(2, 0, 1) / 127.5) - 1.0


@dataclass
class SampleMaker:
    image_size: int
    lowres_size: int = 0  # 0 = not an upsampler
    inpaint: bool = False
    crop_scale: tuple[float, float] = (0.8, 1.0)
    flip_p: float = 0.0
    uncond_p: float = 0.2
    lowres_blur_p: float = 0.0
    lowres_blur_sigma: float = 0.6
    lowres_noise_p: float = 0.0
    lowres_noise_std: float = 0.02
    mask_kind: str = "mixed"
    # (height, width) of an aspect-ratio bucket's training samples; None: image_size squares. The low-res input
    # keeps the image_size / lowres_size ratio.
    shape: tuple[int, int] | None = None

    @property
    def out_shape(self) -> tuple[int, int]:
        return self.shape or (self.image_size, self.image_size)

    def too_small(self, rgb: np.ndarray) -> bool:
        height, width = self.out_shape
        return rgb.shape[0] < height or rgb.shape[1] < width

    def random_crop(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.shape is not None and self.shape[0] != self.shape[1]:
            return self._random_shaped_crop(rgb, rng)
        return self._random_square_crop(rgb, rng)

    def _random_shaped_crop(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random crop of the bucket's aspect (area fraction of the largest such crop in crop_scale), resized to
        the bucket's shape; as with squares, never below the output size, so images are only downscaled."""
        h, w = rgb.shape[:2]
        out_h, out_w = self.out_shape
        largest = min(h / out_h, w / out_w)  # the largest crop is `largest` times the output shape
        scale = min(largest, max(largest * float(np.sqrt(rng.uniform(*self.crop_scale))), 1.0))
        crop_h, crop_w = min(h, int(round(out_h * scale))), min(w, int(round(out_w * scale)))
        top = int(rng.integers(0, h - crop_h + 1))
        left = int(rng.integers(0, w - crop_w + 1))
        return _resize(rgb[top : top + crop_h, left : left + crop_w], out_h, out_w)

    def _random_square_crop(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random square crop (area fraction of the largest square in crop_scale) resized to image_size.

        Non-square images are cropped, never squashed; the crop never falls below image_size pixels so images
        are only ever downscaled.
        """
        h, w = rgb.shape[:2]
        short = min(h, w)
        side = int(round(short * np.sqrt(rng.uniform(*self.crop_scale))))
        side = min(short, max(side, self.out_shape[0]))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        return _resize(rgb[top : top + side, left : left + side], self.out_shape[0])

    def center_crop(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return _resize(rgb[top : top + side, left : left + side], self.image_size)

    def low_res(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """The upsampler's conditioning: an antialiased (area) downscale, optionally blurred and noised."""
        height, width = image.shape[:2]
        low = (width * self.lowres_size // self.image_size, height * self.lowres_size // self.image_size)
        small = cv2.resize(image, low, interpolation=cv2.INTER_AREA)
        if rng is not None and self.lowres_blur_p and rng.random() < self.lowres_blur_p:
            sigma = rng.uniform(0.1, self.lowres_blur_sigma)
            small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
        out = to_unit_range(small)
        if rng is not None and self.lowres_noise_p and rng.random() < self.lowres_noise_p:
            std = rng.uniform(0.0, self.lowres_noise_std)
            out = np.clip(out + rng.standard_normal(out.shape).astype(np.float32) * std, -1.0, 1.0)
        return out

    def _finish(self, image: np.ndarray, caption: str, uncond: bool, rng, mask_rng) -> dict:
        sample = {"image": to_unit_range(image), "caption": caption, "uncond": uncond}
        if self.lowres_size:
            sample["low_res"] = self.low_res(image, rng)
        if self.inpaint:
            sample["inpaint_mask"] = random_mask(image.shape[:2], mask_rng, self.mask_kind)[None]
        return sample

    def train_sample(
        self, rgb: np.ndarray, captions: tuple[str, ...], rng: np.random.Generator, keep_caption: bool = False
    ) -> dict:
        image = self.random_crop(rgb, rng)
        if self.flip_p and rng.random() < self.flip_p:
            image = np.ascontiguousarray(image[:, ::-1])
        caption = captions[int(rng.integers(len(captions)))] if captions else ""
        dropped = bool(rng.random() < self.uncond_p)  # drawn either way: the rng stream does not depend on the flag
        uncond = (dropped and not keep_caption) or not caption
        return self._finish(image, caption, uncond, rng, rng)

    def val_sample(self, rgb: np.ndarray, captions: tuple[str, ...], index: int, seed: int) -> dict:
        image = self.center_crop(rgb)
        caption = captions[0] if captions else ""
        return self._finish(image, caption, not caption, None, np.random.default_rng([seed, 99, index]))
