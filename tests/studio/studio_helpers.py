"""Helpers shared by the studio tests (a module with a unique name: test dirs have no __init__.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest


def missing_dependency(reason: str):
    """Skip locally, but fail in CI: there a missing dependency is a broken setup, not a reason to skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error)")
    pytest.skip(reason)


def apt_install(*packages: str) -> None:
    """Install Debian packages when running as root with apt (what the test setup is allowed to do)."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages], env=env, check=False, capture_output=True, timeout=900
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
