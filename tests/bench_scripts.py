"""Load a script of bench/ as a module, the way the tests of the benchmarks run them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_bench(monkeypatch, name: str):
    """bench/<name>.py as a module (bench/ goes on sys.path for the test: its scripts import quality.py)."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(f"{name}_bench", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
