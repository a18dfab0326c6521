"""The trainer takes its fast paths: fused AdamW and a foreach EMA on CUDA, no host sync in the model's token
check on an accelerator, channels_last only when asked, and a --compile whose bf16 gradients match eager."""

from __future__ import annotations

import pytest
import torch

from finetune.model import build_model, get_preset
from finetune.train import ConfigError, build_config
from finetune.train.config import compile_supported
from finetune.train.ema import EMA
from finetune.train.trainer import fused_adamw_available, use_channels_last


def test_fused_adamw_is_chosen_on_cuda_and_cpu():
    assert fused_adamw_available(torch.device("cuda", 0))
    assert fused_adamw_available(torch.device("cpu"))
    assert not fused_adamw_available(torch.device("meta"))


def test_ema_update_is_one_foreach_lerp(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    ema = EMA(model, 0.9)
    calls = []
    real = torch._foreach_lerp_
    monkeypatch.setattr(torch, "_foreach_lerp_", lambda *a: calls.append(len(a[0])) or real(*a))
    ema.update(model)
    assert calls == [4]  # all four parameters in one call, no per-parameter Python loop


def test_channels_last_auto_means_off():
    assert not use_channels_last("auto")
    assert not use_channels_last("no")
    assert use_channels_last("yes")


def test_token_check_reads_no_values_of_device_tensors():
    """On a non-CPU device the range check would be a host sync per forward; a meta tensor has no values to read,
    so reading them fails: the check must not."""
    model = build_model(get_preset("tiny-base"))
    tokens = torch.zeros(2, model.text_ctx, dtype=torch.long, device="meta")
    mask = torch.ones(2, model.text_ctx, dtype=torch.bool, device="meta")
    checked, _ = model._check_tokens(tokens, mask)
    assert checked.device.type == "meta"


# The fewest blocks that still hold every kind of layer: GroupNorm(+SiLU), scale-shift ResBlocks, a down- and an
# up-sampling ResBlock, attention with text keys, the text transformer. Compile time grows with the block count
# (tiny-base took 6.6 minutes on the shared 2-core CPU, this one 3.3: most of it inductor's fixed cost).
COMPILE_CHECK_OPTIONS = {
    **get_preset("tiny-base"),
    "image_size": 16,
    "channel_mult": "1,2",
    "num_res_blocks": 1,
    "attention_resolutions": "8",
    "xf_layers": 1,
    "dropout": 0.0,
}


@pytest.mark.timeout(600)
def test_compiled_bf16_gradients_match_eager():
    """glide-finetune dropped its compile path after it corrupted bf16 gradients: ours must match eager, and
    --compile is refused on torch releases where it did not (2.9.1 gave NaN gradients)."""
    if not compile_supported():
        with pytest.raises(ConfigError, match="--compile needs torch"):
            build_config({"run_dir": "/tmp/r", "data": ["d"], "preset": "tiny-base", "compile": True})
        return
    options = COMPILE_CHECK_OPTIONS
    torch.manual_seed(0)
    eager = build_model(options).train()
    compiled = build_model(options).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    g = torch.Generator().manual_seed(1)
    size, ctx = eager.image_size, eager.text_ctx
    x = torch.randn(2, 3, size, size, generator=g)
    t = torch.tensor([3, 700])
    tokens = torch.randint(0, eager.vocab_size, (2, ctx), generator=g)
    mask = torch.arange(ctx)[None] < torch.tensor([[5], [ctx]])
    target = torch.randn(2, 6, size, size, generator=g)
    grads = []
    for model in (eager, compiled):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, tokens=tokens, mask=mask)
        (out.float() - target).square().mean().backward()
        grads.append({n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, g_eager in grads[0].items():
        g_comp = grads[1][name]
        scale = g_eager.abs().max().clamp_min(1e-12)
        # bf16 keeps 8 bits of mantissa: a fused kernel may round intermediates differently, so differences of a
        # few bf16 ulps of the largest gradient are expected; a corrupted gradient is off by O(1) of it.
        assert ((g_comp - g_eager).abs().max() / scale).item() < 0.05, name


def test_per_step_tables_are_not_copied_to_the_device_again(monkeypatch):
    """A host-to-device copy of pageable memory waits for the device: the timestep frequencies and the v
    weighting's table are made once per device, not on every forward / loss."""
    from finetune.diffusion import build_diffusion
    from finetune.model.layers import timestep_embedding

    diffusion = build_diffusion(1000, "linear")
    t = torch.tensor([0, 999])
    first = (timestep_embedding(t, 64), diffusion.mse_weights(t, "v", 100.0))

    def no_copies(*args, **kwargs):
        raise AssertionError("a table was built on the host again")

    monkeypatch.setattr(torch, "from_numpy", no_copies)
    monkeypatch.setattr(torch, "arange", no_copies)
    again = (timestep_embedding(t, 64), diffusion.mse_weights(t, "v", 100.0))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
