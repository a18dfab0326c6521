"""encode_text batching helpers, autocast behaviour, activation checkpointing, fp16 option."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_fp32_close

from finetune.model import TextEmbedding, build_model, concat_text_emb, get_preset, index_text_emb
from finetune.model.text_encoder import LayerNorm32


def randomised(preset, seed=0, **extra):
    torch.manual_seed(seed)
    model = build_model({**get_preset(preset), **extra})
    for p in model.parameters():  # zero-initialised output layers would make every comparison trivial
        p.data.normal_(0, 0.05)
    return model.eval()


def batch(model, n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    size, ctx = model.image_size, model.text_ctx
    tokens = torch.randint(0, model.vocab_size, (n, ctx), generator=g)
    mask = torch.arange(ctx)[None] < torch.tensor([5, 0, ctx][:n])[:, None]
    return torch.randn(n, 3, size, size, generator=g), torch.tensor([0, 400, 999][:n]), tokens, mask


def test_text_emb_concat_and_index_match_batched_encoding():
    model = randomised("tiny-base")
    x, t, tokens, mask = batch(model)
    with torch.no_grad():
        full = model.encode_text(tokens, mask)
        parts = [model.encode_text(tokens[i : i + 1], mask[i : i + 1]) for i in range(3)]
        joined = concat_text_emb(parts)
        assert isinstance(joined, TextEmbedding) and len(joined) == 3
        assert torch.allclose(joined.pooled, full.pooled, atol=1e-6)
        assert torch.allclose(joined.sequence, full.sequence, atol=1e-6)
        picked = index_text_emb(full, torch.tensor([2, 0]))
        assert torch.equal(picked.pooled, full.pooled[[2, 0]]) and len(full[1]) == 1
        out = model(x[[2, 0]], t[[2, 0]], text_emb=picked)
        ref = model(x[[2, 0]], t[[2, 0]], tokens=tokens[[2, 0]], mask=mask[[2, 0]])
    assert_fp32_close(out, ref)
    with pytest.raises(ValueError, match="at least one"):
        concat_text_emb([])


def test_padding_positions_ignore_token_ids():
    model = randomised("tiny-base")
    x, t, tokens, mask = batch(model)
    other = torch.where(mask, tokens, torch.randint_like(tokens, 0, 1000))
    with torch.no_grad():
        # masked keys get zero attention weight; only the kernels' summation order may differ
        assert_fp32_close(model(x, t, tokens=tokens, mask=mask), model(x, t, tokens=other, mask=mask))


def test_bf16_autocast_keeps_layernorm_fp32_and_stays_close():
    model = randomised("tiny-upsample")
    x, t, tokens, mask = batch(model)
    low = torch.randn(3, 3, 16, 16)
    seen = []
    hook = model.final_ln.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.no_grad():
        ref = model(x, t, tokens=tokens, mask=mask, low_res=low)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, tokens=tokens, mask=mask, low_res=low)
            ln = LayerNorm32(8)
            y = torch.randn(2, 8, dtype=torch.bfloat16)
            exact = torch.nn.functional.layer_norm(y.float(), (8,))
            assert torch.equal(ln(y), exact.to(torch.bfloat16))
    hook.remove()
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() / ref.abs().max() < 0.05
    assert seen[-1][1] == seen[-1][0]


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomised("tiny-base").train()
    x, t, tokens, mask = batch(model)

    def grads():
        model.zero_grad()
        model(x, t, tokens=tokens, mask=mask).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.set_gradient_checkpointing(True)
    assert model.gradient_checkpointing and model.transformer.gradient_checkpointing
    checkpointed = grads()
    model.set_gradient_checkpointing(False)
    for name, g in plain.items():
        assert torch.allclose(g, checkpointed[name], atol=1e-6, rtol=1e-5), name


def test_use_fp16_converts_blocks_like_glide():
    model = randomised("tiny-base", use_fp16=True)
    assert model.compute_dtype == torch.float16
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert model.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32  # norms stay float32
    assert model.out[2].weight.dtype == torch.float32
    x, t, tokens, mask = batch(model)
    with torch.no_grad():
        out = model(x, t, tokens=tokens, mask=mask)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_channels_last_model_gives_the_same_output():
    model = randomised("tiny-base")
    x, t, tokens, mask = batch(model)
    with torch.no_grad():
        ref = model(x, t, tokens=tokens, mask=mask)
        model.to(memory_format=torch.channels_last)
        out = model(x, t, tokens=tokens, mask=mask)
    assert_fp32_close(out, ref)


@pytest.mark.parametrize(
    "extra",
    [
        {"resblock_updown": False, "use_scale_shift_norm": False},
        {"xf_final_ln": False, "xf_padding": False, "num_head_channels": -1, "num_heads": 2},
        {"xf_width": 0},
    ],
)
def test_other_architecture_options_run(extra):
    model = randomised("tiny-base", **extra)
    x, t, tokens, mask = batch(model)
    if extra.get("resblock_updown") is False:
        assert "input_blocks.2.0.op.weight" in model.state_dict()  # strided-conv downsampling, OpenAI's names
    with torch.no_grad():
        out = (
            model(x, t)
            if not model.xf_width
            else model(x, t, tokens=tokens, mask=None if not model.xf_padding else mask)
        )
    assert out.shape == (3, 6, 32, 32) and torch.isfinite(out).all()
