"""Decode untrusted image bytes, resize to training sizes (square or WxH), encode for shards.

Every source (folders, Flickr30k, the web downloader, the synthetic world) goes through
`decode_image`, so corrupt, truncated, oversized and unusual images are handled in one place
and reported with a stable failure reason (`ImageError.reason`).
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps

from data_pipeline.errors import UserError

# Failure reasons (also used as keys of the per-shard `failures` counts).
EMPTY_IMAGE = "empty_image"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED_IMAGE = "truncated_image"
CORRUPT_IMAGE = "corrupt_image"
DECOMPRESSION_BOMB = "decompression_bomb"
IMAGE_TOO_SMALL = "image_too_small"
RESIZE_FAILED = "resize_failed"

# Declared width*height above this is refused before any pixel is decoded.
DEFAULT_MAX_PIXELS = 64_000_000

RESIZE_MODES = ("center_crop", "pad")
IMAGE_FORMATS = {"jpg": ".jpg", "png": ".png", "webp": ".webp"}


class ImageError(UserError, ValueError):
    """An image could not be used; `reason` is a short machine-readable failure reason. The shard writer counts
    it by reason; where one reaches a command (an image file the user named), it is a one-line user error."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    draft_side: int | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode image bytes into an RGB uint8 array of shape (H, W, 3).

    Returns `(rgb, (width, height))` where the size is the image's original (declared) size.
    CMYK, grayscale, 16-bit, palette and alpha images become RGB (transparency composited on
    white); animated images give their first frame; EXIF orientation is applied.
    `draft_side`: when the image is a JPEG much larger than needed, let libjpeg decode it at a
    reduced scale whose short side stays >= draft_side (a large speed-up for web images).
    Raises ImageError with a reason on any problem.
    """
    if not data:
        raise ImageError(EMPTY_IMAGE, "no bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(CORRUPT_IMAGE, f"declared size {width}x{height}")
            if width * height > max_pixels:
                raise ImageError(DECOMPRESSION_BOMB, f"declared size {width}x{height} exceeds {max_pixels} pixels")
            if min(width, height) < min_side:
                raise ImageError(IMAGE_TOO_SMALL, f"{width}x{height} is smaller than {min_side} px")
            if draft_side and img.format == "JPEG" and min(width, height) >= 2 * draft_side:
                img.draft("RGB", (draft_side * width // min(width, height), draft_side * height // min(width, height)))
            img.load()
            if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation; transposing copies, so only when needed
                img = ImageOps.exif_transpose(img)
            rgb = _to_rgb_array(img)
    except ImageError:
        raise
    except Image.UnidentifiedImageError as exc:
        if _has_image_signature(data):
            raise ImageError(CORRUPT_IMAGE, f"broken {_has_image_signature(data)} data") from exc
        raise ImageError(NOT_AN_IMAGE, _sniff(data)) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(DECOMPRESSION_BOMB, str(exc)) from exc
    except OSError as exc:
        reason = TRUNCATED_IMAGE if "truncated" in str(exc).lower() else CORRUPT_IMAGE
        raise ImageError(reason, str(exc)) from exc
    except (ValueError, SyntaxError, TypeError, IndexError, KeyError, EOFError, MemoryError) as exc:
        # Pillow plugins raise a variety of exceptions on malformed headers.
        raise ImageError(CORRUPT_IMAGE, f"{type(exc).__name__}: {exc}") from exc
    return rgb, (width, height)


_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _has_image_signature(data: bytes) -> str | None:
    """The format named by the file's magic bytes, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _SIGNATURES.items() if data.startswith(magic)), None)


def _sniff(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "body is HTML/XML"
    if head.startswith((b"{", b"[")):
        return "body looks like JSON"
    return f"unrecognised format ({len(data)} bytes)"


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if getattr(img, "is_animated", False):
        img.seek(0)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        gray = np.clip(arr, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def resize_square(
    rgb: np.ndarray,
    size: int,
    mode: str = "center_crop",
    pad_color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Make a size x size RGB image (`resize_to` with a square target)."""
    return resize_to(rgb, size, size, mode, pad_color)


def resize_to(
    rgb: np.ndarray,
    width: int,
    height: int,
    mode: str = "center_crop",
    pad_color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Make a width x height RGB image.

    center_crop: scale so the image covers the target, then cut the centre.
    pad: scale so the image fits inside the target, then pad the borders with `pad_color`.
    Shrinking uses area interpolation (no aliasing); enlarging uses bicubic.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    h, w = rgb.shape[:2]
    fit = max if mode == "center_crop" else min
    scale = fit(width / w, height / h)
    new_w = max(1, round(w * scale))
    new_h = max(1, round(h * scale))
    if mode == "center_crop":
        new_w, new_h = max(new_w, width), max(new_h, height)
    else:
        new_w, new_h = min(new_w, width), min(new_h, height)
    if (new_w, new_h) != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=interp)
    if mode == "center_crop":
        top = (new_h - height) // 2
        left = (new_w - width) // 2
        out = rgb[top : top + height, left : left + width]
    else:
        top = (height - new_h) // 2
        left = (width - new_w) // 2
        out = cv2.copyMakeBorder(
            rgb,
            top,
            height - new_h - top,
            left,
            width - new_w - left,
            cv2.BORDER_CONSTANT,
            value=tuple(int(c) for c in pad_color),
        )
    return np.ascontiguousarray(out)


def encode_image(rgb: np.ndarray, image_format: str = "jpg", quality: int = 95) -> bytes:
    """Encode an RGB uint8 array as jpg, png or webp bytes."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    params: list[int] = []
    if image_format == "jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif image_format == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    elif image_format == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(IMAGE_FORMATS[image_format], bgr, params)
    if not ok:
        raise ImageError(RESIZE_FAILED, f"OpenCV could not encode {image_format}")
    return buf.tobytes()


def read_image_file(path, **kwargs) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image file from disk (see decode_image); unreadable files raise ImageError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageError("unreadable_file", str(exc)) from exc
    return decode_image(data, **kwargs)
