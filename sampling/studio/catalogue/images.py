"""Image files on disk, named by the SHA-256 of their bytes."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, PngImagePlugin

from data_pipeline.fsutil import atomic_write_bytes

from .errors import InvalidInput

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_IMAGE_PIXELS = 8192 * 8192


def png_to_store(image, params: dict | None = None) -> bytes:
    """The PNG bytes the catalogue stores for a PIL image, a PNG/JPEG file path or raw image bytes.

    PNG input is kept byte for byte (its text chunks, e.g. generation parameters, survive);
    anything else is decoded and re-encoded, with ``params`` written to a text chunk.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InvalidInput(f"image file not found: {path}")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise InvalidInput(f"image file {path} is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
        image = path.read_bytes()
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidInput(f"image is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
        decoded = _decode(data)
        if decoded.format == "PNG":
            return data
        image = decoded
    if not isinstance(image, Image.Image):
        raise InvalidInput(f"expected an image, got {type(image).__name__}")
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise InvalidInput(f"image of {image.width}x{image.height} pixels is too large")
    info = PngImagePlugin.PngInfo()
    if params:
        info.add_text("parameters", json.dumps(params, sort_keys=True))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _decode(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise InvalidInput(f"image of {image.width}x{image.height} pixels is too large")
        image.load()
    except InvalidInput:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise InvalidInput(f"not a readable image: {exc}") from exc
    return image


class ImageStore:
    """A folder of ``<hash[:2]>/<hash>.png`` files with a lock that serialises add and delete."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, image_hash: str) -> Path:
        return self.root / image_hash[:2] / f"{image_hash}.png"

    @staticmethod
    def hash_of(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def put(self, data: bytes) -> str:
        """Write the bytes under their hash (atomically; a no-op when already there)."""
        image_hash = self.hash_of(data)
        target = self.path(image_hash)
        if target.is_file() and target.stat().st_size == len(data):
            return image_hash
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
        return image_hash

    def remove(self, image_hash: str) -> None:
        self.path(image_hash).unlink(missing_ok=True)

    @contextmanager
    def lock(self):
        """Exclusive lock across threads and processes sharing this folder.

        Held around "row change + file change" so a delete never unlinks a file that a
        concurrent save of the same image has just referenced again.
        """
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
