"""Forward parity with OpenAI's reference GLIDE models (fixtures produced by glide-text2im)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tolerances import assert_fp32_close

from finetune.model import build_model

VARIANTS = ["tiny_base", "tiny_upsample", "tiny_base_inpaint", "tiny_upsample_inpaint"]
EXTRA_INPUTS = ("low_res", "inpaint_image", "inpaint_mask")


def load_reference(glide_fixtures, name):
    options = json.loads((glide_fixtures / "cases.json").read_text())[name]["options"]
    model = build_model(options).eval()
    model.load_state_dict(load_file(glide_fixtures / f"{name}_weights.safetensors"), strict=True)
    case = load_file(glide_fixtures / f"{name}_case.safetensors")
    return model, case


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_matches_reference(glide_fixtures, name):
    model, case = load_reference(glide_fixtures, name)
    extra = {k: case[k] for k in EXTRA_INPUTS if k in case}
    with torch.no_grad():
        out = model(case["x"], case["timesteps"], tokens=case["tokens"], mask=case["mask"], **extra)
    assert out.shape == case["output"].shape
    assert (out - case["output"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["tiny_base", "tiny_upsample_inpaint"])
def test_encoded_text_path_equals_tokens_path(glide_fixtures, name):
    model, case = load_reference(glide_fixtures, name)
    extra = {k: case[k] for k in EXTRA_INPUTS if k in case}
    with torch.no_grad():
        emb = model.encode_text(case["tokens"], case["mask"])
        via_emb = model(case["x"], case["timesteps"], text_emb=emb, **extra)
        via_tokens = model(case["x"], case["timesteps"], tokens=case["tokens"], mask=case["mask"], **extra)
    assert_fp32_close(via_emb, via_tokens)
    assert (via_emb - case["output"]).abs().max().item() <= 1e-4
