"""A tiny stand-in for OpenAI's GLIDE release: four small `.pt` files in OpenAI's layout (GPT-2 tokens), a
manifest of their keys, shapes and sizes, and a local HTTP server serving them; the hub's environment points
there so no test touches the internet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from random_models import random_state_dict
from release_server import ReleaseServer

from finetune.hub import download as download_module
from finetune.model import get_preset

SMALL = {"xf_layers": 1, "num_res_blocks": 1, "tokenizer": "gpt2", "text_ctx": 16}
TINY_RELEASE_OPTIONS = {
    "base": {**get_preset("tiny-base"), **SMALL, "image_size": 16, "channel_mult": "1,2", "attention_resolutions": "8"},
    "upsample": {
        **get_preset("tiny-upsample"),
        **SMALL,
        "image_size": 32,
        "channel_mult": "1,1,2",
        "attention_resolutions": "8",
    },
}
TINY_RELEASE_OPTIONS["base_inpaint"] = {**TINY_RELEASE_OPTIONS["base"], "inpaint": True}
TINY_RELEASE_OPTIONS["upsample_inpaint"] = {**TINY_RELEASE_OPTIONS["upsample"], "inpaint": True}


def write_manifest(path: Path, release: Path, sizes: bool = True) -> Path:
    """A release manifest (the packaged one's format) for the `.pt` files in `release`."""
    checkpoints = {}
    for key, options in TINY_RELEASE_OPTIONS.items():
        pt = release / f"{key}.pt"
        state = torch.load(pt, weights_only=True)
        checkpoints[key] = {
            "file": pt.name,
            "size": pt.stat().st_size if sizes else None,
            "options": options,
            "num_params": sum(v.numel() for v in state.values()),
            "keys": {k: list(v.shape) for k, v in state.items()},
        }
    path.write_text(json.dumps({"format": 1, "checkpoints": checkpoints}))
    return path


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory) -> dict[str, Path]:
    """{'dir': folder of base.pt, upsample.pt, base_inpaint.pt, upsample_inpaint.pt, 'manifest': their facts,
    'manifest_unsized': the same without file sizes}."""
    root = tmp_path_factory.mktemp("tiny_release")
    release = root / "dec-2021"
    release.mkdir()
    for seed, (key, options) in enumerate(TINY_RELEASE_OPTIONS.items()):
        torch.save(random_state_dict(options, seed), release / f"{key}.pt")
    return {
        "dir": release,
        "manifest": write_manifest(root / "manifest.json", release),
        "manifest_unsized": write_manifest(root / "manifest_unsized.json", release, sizes=False),
    }


@pytest.fixture
def server(tiny_release):
    srv = ReleaseServer(tiny_release["dir"])
    yield srv
    srv.close()


@pytest.fixture
def hub_env(monkeypatch, tmp_path, server, tiny_release) -> dict:
    """Environment of a hub test: an empty cache in tmp_path, the local server, the tiny manifest, quick retries."""
    cache = tmp_path / "cache"
    env = {
        "AUTOCOMICS_CACHE": str(cache),
        "AUTOCOMICS_GLIDE_URL": server.url,
        "AUTOCOMICS_GLIDE_MANIFEST": str(tiny_release["manifest"]),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AUTOCOMICS_OFFLINE", raising=False)
    monkeypatch.setattr(download_module, "RETRY_DELAY_S", 0.01)
    return {"cache": cache, "server": server, "env": env, **tiny_release}
