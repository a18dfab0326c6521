"""Suite-wide test settings: where the shared reference fixtures live, and determinism."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads spin by default; on a 2-core machine the spinning starves subprocess tests. Set before
# any test module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI clones the repo with shared/ beside it; developers have the same layout under /work.
SHARED_DIR = Path(os.environ.get("AUTOCOMICS_SHARED", REPO_ROOT.parent / "shared"))
GLIDE_FIXTURES = SHARED_DIR / "fixtures" / "glide"


@pytest.fixture(scope="session")
def glide_fixtures() -> Path:
    """Folder of the GLIDE parity fixtures (cases.json, *.safetensors, gpt2_bpe/)."""
    if not GLIDE_FIXTURES.is_dir():
        pytest.fail(f"GLIDE fixtures not found at {GLIDE_FIXTURES}; set AUTOCOMICS_SHARED to the shared/ folder")
    return GLIDE_FIXTURES


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
