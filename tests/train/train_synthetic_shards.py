"""Tiny caption-image datasets for the trainer tests: coloured shapes drawn with OpenCV, written as WebDataset
shards in the data pipeline's layout (DIR/<size>/NNNNN.tar with KEY.png, KEY.txt, KEY.json) or as an
imagefolder (metadata.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import webdataset as wds

COLORS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("circle", "square", "triangle")


def draw(shape: str, color: str, size: int, rng: np.random.Generator, width: int | None = None) -> np.ndarray:
    width = width or size
    img = np.full((size, width, 3), 245, np.uint8)
    r = int(size * rng.uniform(0.22, 0.32))
    cx = int(width / 2 + rng.uniform(-0.1, 0.1) * size)
    cy = int(size / 2 + rng.uniform(-0.1, 0.1) * size)
    c = COLORS[color]
    if shape == "circle":
        cv2.circle(img, (cx, cy), r, c, -1, lineType=cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), c, -1)
    else:
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(img, [pts], c, lineType=cv2.LINE_AA)
    return img


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def samples(n: int, size: int, seed: int = 0, val_every: int = 5, width: int | None = None):
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        caption = f"a {color} {shape}"
        meta = {
            "caption": caption,
            "captions": [caption, f"{color} {shape} on white"],
            "source": "test",
            "split": "val" if val_every and i % val_every == val_every - 1 else "train",
            "width": width or size,
            "height": size,
        }
        yield f"{i:06d}", draw(shape, color, size, rng, width), caption, meta


def write_shards(
    root: Path,
    n: int = 40,
    size: int = 32,
    per_shard: int = 10,
    seed: int = 0,
    val_every: int = 5,
    captions: bool = True,
    width: int | None = None,
) -> Path:
    """DIR/<size>/00000.tar ...; returns DIR."""
    out = Path(root) / str(size)
    out.mkdir(parents=True, exist_ok=True)
    writer = None
    for i, (key, rgb, caption, meta) in enumerate(samples(n, size, seed, val_every, width)):
        if i % per_shard == 0:
            if writer is not None:
                writer.close()
            writer = wds.TarWriter(str(out / f"{i // per_shard:05d}.tar"))
        sample = {"__key__": key, "png": png_bytes(rgb)}
        if captions:
            sample["txt"] = caption
            sample["json"] = json.dumps(meta).encode()
        else:
            sample["json"] = json.dumps({k: v for k, v in meta.items() if k not in ("caption", "captions")}).encode()
        writer.write(sample)
    if writer is not None:
        writer.close()
    (Path(root) / "manifest.json").write_text(json.dumps({"sizes": [size], "total": n}))
    return Path(root)


def write_imagefolder(root: Path, n: int = 12, size: int = 40, seed: int = 0, width: int | None = None) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, rgb, caption, meta in samples(n, size, seed, val_every=4, width=width):
        name = f"{key}.png"
        (root / name).write_bytes(png_bytes(rgb))
        lines.append(json.dumps({"file_name": name, "text": caption, "split": meta["split"]}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root
