"""Fixtures for the data pipeline tests: real image bytes of many kinds, made on the fly."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image


def _pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, seed-dependent RGB picture (distinct perceptual hashes for distinct seeds)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG that declares huge dimensions."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def make_image_bytes(kind: str, width: int = 48, height: int = 40, seed: int = 0) -> bytes:
    """Encoded bytes of one image kind: jpg, png, webp, cmyk, gray, gray16, rgba, palette_alpha,
    la, animated_gif, and the bad ones: truncated, corrupt, html, empty, bomb."""
    rgb = pattern(width, height, seed)
    img = Image.fromarray(rgb)
    if kind == "jpg":
        return _pil_bytes(img, "JPEG", quality=95)
    if kind == "png":
        return _pil_bytes(img, "PNG")
    if kind == "webp":
        return _pil_bytes(img, "WEBP", quality=95)
    if kind == "cmyk":
        return _pil_bytes(img.convert("CMYK"), "JPEG", quality=95)
    if kind == "gray":
        return _pil_bytes(img.convert("L"), "PNG")
    if kind == "gray16":
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
        return cv2.imencode(".png", gray)[1].tobytes()
    if kind == "rgba":
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
        return _pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG")
    if kind == "palette_alpha":
        pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        return _pil_bytes(pal, "PNG", transparency=0)
    if kind == "la":
        return _pil_bytes(img.convert("LA"), "PNG")
    if kind == "animated_gif":
        frames = [Image.new("RGB", (width, height), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
        return buf.getvalue()
    if kind == "truncated":
        data = _pil_bytes(Image.fromarray(pattern(256, 256, seed)), "JPEG", quality=95)
        return data[: len(data) // 2]
    if kind == "corrupt":
        data = bytearray(_pil_bytes(img, "PNG"))
        data[40:] = b"\x00" * (len(data) - 40)
        return bytes(data)
    if kind == "html":
        return b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>"
    if kind == "empty":
        return b""
    if kind == "bomb":
        return bomb_png()
    raise ValueError(kind)


GOOD_KINDS = ("jpg", "png", "webp", "cmyk", "gray", "gray16", "rgba", "palette_alpha", "la", "animated_gif")


@pytest.fixture
def image_bytes():
    return make_image_bytes


@pytest.fixture
def make_pattern():
    return pattern
