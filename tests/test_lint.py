"""ruff (pyflakes, pycodestyle, isort, bugbear; settings in pyproject.toml) is clean and the tree is formatted, so the
README's two commands are the whole CI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    if importlib.util.find_spec("ruff") is None and not os.environ.get("CI"):
        pytest.skip("ruff is not installed (the test extra installs it; in CI this fails)")
    done = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
