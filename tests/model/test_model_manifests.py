"""The four OpenAI presets, built on the meta device (no weights allocated), have exactly the
released checkpoints' keys, shapes and parameter counts."""

from __future__ import annotations

import json

import pytest
import torch

from finetune.model import build_model, get_preset, list_presets

PRESET_OF = {
    "base": "glide-base",
    "upsample": "glide-upsample",
    "base_inpaint": "glide-base-inpaint",
    "upsample_inpaint": "glide-upsample-inpaint",
}


@pytest.fixture(scope="module")
def manifests(glide_fixtures):
    return json.loads((glide_fixtures / "checkpoint_manifests.json").read_text())


def meta_shapes(options):
    with torch.device("meta"):
        model = build_model(options)
    assert all(p.is_meta for p in model.parameters())
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return shapes, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("checkpoint", list(PRESET_OF))
def test_preset_matches_release_manifest(manifests, checkpoint):
    manifest = manifests[checkpoint]
    shapes, count = meta_shapes(get_preset(PRESET_OF[checkpoint]))
    assert list(shapes) == list(manifest["keys"])  # same keys, same order
    assert shapes == manifest["keys"]
    assert count == manifest["num_params"]


@pytest.mark.parametrize("checkpoint", list(PRESET_OF))
def test_openai_options_dict_builds_openai_model(manifests, checkpoint):
    # OpenAI's own options dict (no `tokenizer` key) must give GPT-2's vocabulary and the same model.
    shapes, _ = meta_shapes(manifests[checkpoint]["options"])
    assert shapes == manifests[checkpoint]["keys"]


def test_missing_options_take_glide_defaults(manifests):
    assert meta_shapes({})[0] == manifests["base"]["keys"]
    assert meta_shapes({"super_res": True})[0] == manifests["upsample"]["keys"]


def test_small_presets_fit_the_bundled_budget():
    total_bytes = 0
    for name in ("small-base32", "small-upsample128"):
        options = get_preset(name)
        assert options["tokenizer"] == "clip"
        total_bytes += 2 * meta_shapes(options)[1]
    assert total_bytes <= 38 * 2**20  # fp16, leaving room for two CLIP vocab files under 40 MB
    assert {"tiny-base", "tiny-upsample", "tiny-base-inpaint", "tiny-upsample-inpaint"} <= set(list_presets())
