"""Image outputs: PNG files that carry their generation parameters, JSON sidecars, grids, atomic writes.

Every image is written next to a sidecar `NAME.json`. An output counts as written only when both
files exist; `output_state` compares the stored parameters with the requested ones so a rerun can
skip finished work and refuse to overwrite images made with other settings.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image, PngImagePlugin

from data_pipeline.fsutil import atomic_write_bytes, atomic_write_json

PARAMETERS_CHUNK = "parameters"
# Also written as separate text chunks, so common viewers show them without parsing JSON.
TEXT_FIELDS = ("prompt", "seed", "guidance", "sampler", "steps", "model")


def as_pil_image(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image as is, or an HxWx3 uint8 array as a PIL image."""
    if isinstance(image, Image.Image):
        return image
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {array.dtype} {array.shape}")
    return Image.fromarray(array, "RGB")


def png_bytes(image: Image.Image | np.ndarray, parameters: dict | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    if parameters:
        for key in TEXT_FIELDS:
            if key in parameters and parameters[key] is not None:
                info.add_text(key, str(parameters[key]))  # non-Latin-1 text goes into an iTXt chunk
        info.add_text(PARAMETERS_CHUNK, json.dumps(parameters, ensure_ascii=False, sort_keys=True))
    buffer = io.BytesIO()
    as_pil_image(image).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def sidecar_path(png_path: str | os.PathLike) -> Path:
    return Path(png_path).with_suffix(".json")


def save_image(
    path: str | os.PathLike, image: Image.Image | np.ndarray, parameters: dict, info: dict | None = None
) -> Path:
    """Write the PNG (parameters in text chunks) and its JSON sidecar, both atomically.

    `parameters` decide whether a rerun may skip this output; `info` holds facts that do not
    (timings, scores).
    """
    path = Path(path)
    atomic_write_bytes(path, png_bytes(image, parameters))
    sidecar = {"image": path.name, "parameters": parameters}
    if info:
        sidecar["info"] = info
    atomic_write_json(sidecar_path(path), sidecar)
    return path


def read_parameters(path: str | os.PathLike) -> dict:
    """The generation parameters stored in a PNG written by `save_image`."""
    with Image.open(path) as im:
        im.load()
        text = dict(getattr(im, "text", {}) or {})
    if PARAMETERS_CHUNK not in text:
        raise ValueError(f"{path}: no generation parameters in this PNG")
    return json.loads(text[PARAMETERS_CHUNK])


def _normalised(parameters: dict) -> Any:
    return json.loads(json.dumps(parameters, sort_keys=True))


def output_state(path: str | os.PathLike, parameters: dict) -> str:
    """'missing' (write it), 'same' (skip it) or 'different' (written with other parameters)."""
    path = Path(path)
    sidecar = sidecar_path(path)
    if not path.is_file() or not sidecar.is_file():
        return "missing"
    try:
        stored = json.loads(sidecar.read_text(encoding="utf-8")).get("parameters")
        read_parameters(path)  # a truncated or foreign PNG counts as missing
    except (OSError, ValueError, json.JSONDecodeError):
        return "missing"
    return "same" if _normalised(stored) == _normalised(parameters) else "different"


def slugify(text: str, max_length: int = 40, empty: str = "untitled") -> str:
    """A short, filesystem-safe name fragment from a caption (`empty` when nothing of it is left)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return (text[:max_length].rstrip("-")) or empty


def make_grid(
    images: Iterable[Image.Image | np.ndarray],
    columns: int | None = None,
    padding: int = 2,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Tile same-sized images row-major into one image."""
    tiles = [as_pil_image(im) for im in images]
    if not tiles:
        raise ValueError("make_grid needs at least one image")
    width, height = tiles[0].size
    if any(t.size != (width, height) for t in tiles):
        raise ValueError("make_grid needs images of one size")
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    grid = Image.new(
        "RGB", (columns * width + (columns + 1) * padding, rows * height + (rows + 1) * padding), background
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid.paste(tile, (padding + c * (width + padding), padding + r * (height + padding)))
    return grid
