"""Helpers the bench scripts share (they run as `python bench/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def synthetic_shards(workdir: Path, size: int, count: int) -> Path:
    """`count` synthetic-world images at `size` px as shards under `workdir`, built once by the data pipeline's own
    command and reused on later runs."""
    out = workdir / f"synthetic{size}-{count}"
    if not (out / "manifest.json").is_file():
        command = [
            sys.executable,
            "-m",
            "data_pipeline",
            "synthetic",
            "--out",
            str(out),
            "--sizes",
            str(size),
            "--count",
            str(count),
            "--shard-size",
            "64",
            "--no-progress",
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out
