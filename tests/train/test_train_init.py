"""Starting points: OpenAI GLIDE .pt files (tiny models in OpenAI's layout) for the base, the upsampler and the
inpainting variants, inpainting from a plain checkpoint (zero-initialised channels), and the gpt2 -> clip swap."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_settings import fast_config

from finetune.train import read_metrics, train
from finetune.train.model_init import InitError, is_text_side, setup_model


@pytest.fixture(scope="module")
def openai_pts(tmp_path_factory, glide_fixtures):
    """The reference fixtures' tiny state_dicts saved as .pt files, as OpenAI distributes GLIDE."""
    out = tmp_path_factory.mktemp("openai_pt")
    paths = {}
    for name in ("tiny_base", "tiny_upsample", "tiny_base_inpaint", "tiny_upsample_inpaint"):
        state = load_file(str(glide_fixtures / f"{name}_weights.safetensors"))
        paths[name] = out / f"{name}.pt"
        torch.save(state, paths[name])
    return paths


def _inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = model.image_size
    x = torch.randn(batch, 3, size, size, generator=g)
    t = torch.tensor([10, 700][:batch])
    kwargs = {
        "tokens": torch.randint(0, 1000, (batch, model.text_ctx), generator=g),
        "mask": torch.ones(batch, model.text_ctx, dtype=torch.bool),
    }
    if model.super_res:
        kwargs["low_res"] = torch.randn(batch, 3, size // 4, size // 4, generator=g)
    return x, t, kwargs


def test_openai_base_pt_loads_exactly_with_detected_preset(openai_pts, glide_fixtures):
    setup = setup_model(str(openai_pts["tiny_base"]), vocab_path=str(glide_fixtures / "gpt2_bpe"))
    assert setup.preset == "tiny-base" and setup.options["tokenizer"] == "gpt2" and not setup.vocab_swapped
    reference = load_file(str(glide_fixtures / "tiny_base_weights.safetensors"))
    for name, p in setup.model.state_dict().items():
        assert torch.equal(p, reference[name]), name


@pytest.mark.parametrize(
    "plain, target", [("tiny_base", "tiny-base-inpaint"), ("tiny_upsample", "tiny-upsample-inpaint")]
)
def test_inpainting_from_plain_checkpoint_starts_as_the_plain_model(openai_pts, glide_fixtures, plain, target):
    vocab = str(glide_fixtures / "gpt2_bpe")
    base = setup_model(str(openai_pts[plain]), vocab_path=vocab).model.eval()
    inpaint = setup_model(str(openai_pts[plain]), preset=target, vocab_path=vocab).model.eval()
    assert inpaint.inpaint and inpaint.in_channels == base.in_channels + 4
    x, t, kwargs = _inputs(base)
    masked = {"inpaint_image": torch.randn_like(x), "inpaint_mask": (torch.rand_like(x[:, :1]) > 0.5).float()}
    with torch.no_grad():
        torch.testing.assert_close(inpaint(x, t, **kwargs, **masked), base(x, t, **kwargs), rtol=1e-5, atol=1e-5)
    w = inpaint.state_dict()["input_blocks.0.0.weight"]
    assert torch.count_nonzero(w[:, 3:7]) == 0
    with pytest.raises(InitError, match="cannot start a plain model"):
        setup_model(str(openai_pts["tiny_base_inpaint"]), preset="tiny-base", vocab_path=vocab)


def test_fine_tune_openai_base_in_bf16(tmp_path, openai_pts, glide_fixtures, shards32, monkeypatch):
    from finetune.diffusion import GaussianDiffusion

    real, dtypes = GaussianDiffusion.training_losses, []

    def spy(self, model, *args, **kwargs):
        def watched(*a, **k):
            out = model(*a, **k)
            dtypes.append((torch.is_autocast_enabled("cpu"), out.dtype))
            return out

        return real(self, watched, *args, **kwargs)

    monkeypatch.setattr(GaussianDiffusion, "training_losses", spy)
    result = train(
        fast_config(
            run_dir=str(tmp_path / "run"),
            data=[str(shards32)],
            init=str(openai_pts["tiny_base"]),
            vocab_path=str(glide_fixtures / "gpt2_bpe"),
            max_steps=2,
            lr=1e-5,
            val_samples=0,
            mixed_precision="bf16",
            grad_accum=2,
        )
    )
    assert result.step == 2
    assert all(m["skipped"] is None for m in read_metrics(tmp_path / "run"))
    # the model ran under bf16 autocast, but the loss saw float32 outputs outside autocast
    assert dtypes == [(False, torch.float32)] * 4
    from finetune.model_folder import load_model_folder

    loaded = load_model_folder(result.model_dir, use_ema=False)
    assert loaded.tokenizer.name == "gpt2" and loaded.options["text_ctx"] == 16
    reference = load_file(str(glide_fixtures / "tiny_base_weights.safetensors"))
    changed = [k for k, v in loaded.model.state_dict().items() if not torch.equal(v, reference[k])]
    assert changed


@pytest.mark.parametrize(
    "name, shards",
    [("tiny_upsample", "shards64"), ("tiny_base_inpaint", "shards32"), ("tiny_upsample_inpaint", "shards64")],
)
def test_fine_tune_openai_upsampler_and_inpainting(tmp_path, request, openai_pts, glide_fixtures, name, shards):
    data = request.getfixturevalue(shards)
    run_dir = tmp_path / "run"
    result = train(
        fast_config(
            run_dir=str(run_dir),
            data=[str(data)],
            init=str(openai_pts[name]),
            vocab_path=str(glide_fixtures / "gpt2_bpe"),
            max_steps=1,
            lr=1e-5,
            batch_size=2,
            val_samples=2,
            sample_every=0,
            num_sample_prompts=2,
            sample_steps="2",
            lowres_blur_p=0.5,
            lowres_noise_p=0.5,
            export_model=False,
        )
    )
    assert result.step == 1 and read_metrics(run_dir)[0]["loss"] > 0
    import cv2

    grid = cv2.imread(str(run_dir / "samples" / "step-00000001.png"))
    size = 64 if "upsample" in name else 32
    rows = 1 + 1 + 1 + ("inpaint" in name and "upsample" in name)  # condition rows, sample, reference
    assert grid.shape[:2] == (rows * size, 2 * size)


def test_vocabulary_swap_warms_up_the_text_side_with_the_unet_frozen(tmp_path, openai_pts, glide_fixtures, shards32):
    setup = setup_model(str(openai_pts["tiny_base"]), tokenizer="clip")
    assert setup.vocab_swapped and setup.tokenizer.name == "clip"
    assert setup.model.token_embedding.weight.shape[0] == 49408
    run_dir = tmp_path / "swap"
    train(
        fast_config(
            run_dir=str(run_dir),
            data=[str(shards32)],
            init=str(openai_pts["tiny_base"]),
            tokenizer="clip",
            text_warmup_steps=2,
            max_steps=3,
            checkpoint_every=2,
            lr=1e-3,
            val_samples=0,
            export_model=False,
        )
    )
    reference = load_file(str(glide_fixtures / "tiny_base_weights.safetensors"))
    after_warmup = load_file(str(run_dir / "checkpoints" / "step-00000002" / "model.safetensors"))
    after_step3 = load_file(str(run_dir / "checkpoints" / "step-00000003" / "model.safetensors"))
    unet = [k for k in reference if not is_text_side(k)]
    text = [k for k in reference if is_text_side(k) and k != "token_embedding.weight"]
    assert all(torch.equal(after_warmup[k], reference[k]) for k in unet)
    assert any(not torch.equal(after_warmup[k], reference[k]) for k in text)
    assert any(not torch.equal(after_step3[k], reference[k]) for k in unet)


def test_train_scope_unet_freezes_the_text_side(tmp_path, openai_pts, glide_fixtures, shards32):
    run_dir = tmp_path / "unet_only"
    train(
        fast_config(
            run_dir=str(run_dir),
            data=[str(shards32)],
            init=str(openai_pts["tiny_base"]),
            vocab_path=str(glide_fixtures / "gpt2_bpe"),
            train_scope="unet",
            grad_checkpointing=True,
            max_steps=1,
            lr=1e-3,
            val_samples=0,
            export_model=False,
            ema_decay=0,
        )
    )
    reference = load_file(str(glide_fixtures / "tiny_base_weights.safetensors"))
    after = load_file(str(run_dir / "checkpoints" / "step-00000001" / "model.safetensors"))
    assert all(torch.equal(after[k], reference[k]) for k in reference if is_text_side(k))
    assert any(not torch.equal(after[k], reference[k]) for k in reference if not is_text_side(k))
    assert not (run_dir / "checkpoints" / "step-00000001" / "ema.safetensors").exists()
