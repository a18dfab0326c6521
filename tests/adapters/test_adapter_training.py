"""The trainer's hooks: only the adapter trains, its weights round-trip through checkpoints, its EMA, its folder."""

from __future__ import annotations

import copy

import pytest
import torch

from finetune.adapters import (
    LoraSettings,
    adapter_settings,
    adapter_state_dict,
    apply_adapters,
    is_lora_parameter,
    load_adapter_state_dict,
    prepare_for_adapter_training,
    read_adapter_config,
    save_adapter_folder,
)
from finetune.adapters.apply import adapters_disabled
from finetune.train.ema import EMA
from tests.adapters.helpers import model_inputs, output, tiny_model
from tests.tolerances import assert_fp32_close

BASE_ID = "tiny@0123456789ab"


def train_steps(model, params, steps: int = 3, seed: int = 3, optimizer=None) -> None:
    inputs = model_inputs(model)
    target = torch.randn_like(output(model, inputs), generator=torch.Generator().manual_seed(seed))
    optimizer = optimizer or torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = (model(**inputs) - target).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def base_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not is_lora_parameter(n)}


@pytest.fixture
def trained():
    """A tiny base model with a rank-4 adapter trained for a few steps, and its output before training."""
    model = tiny_model().requires_grad_(True)
    inputs = model_inputs(model)
    before = output(model, inputs)
    params = prepare_for_adapter_training(model, LoraSettings(rank=4, alpha=4))
    frozen = base_weights(model)
    train_steps(model, params)
    return model, inputs, before, frozen, params


def test_optimizer_steps_change_the_output_and_leave_the_base_bit_identical(trained):
    model, inputs, before, frozen, params = trained
    assert params and all(p.requires_grad for p in params)
    assert {id(p) for p in params} == {id(p) for n, p in model.named_parameters() if p.requires_grad}
    assert not torch.allclose(output(model, inputs), before, atol=1e-4)
    after = base_weights(model)
    assert after.keys() == frozen.keys() and all(torch.equal(after[k], frozen[k]) for k in frozen)
    with adapters_disabled(model):  # the base's own output, for side-by-side samples
        assert torch.equal(output(model, inputs), before)


def test_adapter_checkpoint_round_trip_reproduces_the_output(trained):
    model, inputs, *_ = trained
    saved = {k: v.clone() for k, v in adapter_state_dict(model).items()}
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in saved)
    fresh = tiny_model().requires_grad_(True)
    prepare_for_adapter_training(fresh, adapter_settings(model))
    load_adapter_state_dict(fresh, saved)
    assert torch.equal(output(fresh, inputs), output(model, inputs))


def test_ema_of_the_adapter_only_shadows_it_and_swaps_back_exactly(trained):
    model, inputs, before, _, params = trained
    ema = EMA(model, decay=0.5, parameter_filter=is_lora_parameter)
    assert set(ema.shadow) == {n for n, p in model.named_parameters() if p.requires_grad}
    trained_out = output(model, inputs)
    with torch.no_grad():
        for p in params:
            p.mul_(0.0)  # a later "step" the EMA only half follows
    ema.update(model)
    with ema.swapped_in(model):
        halfway = output(model, inputs)
    assert not torch.equal(halfway, trained_out) and not torch.equal(halfway, before)
    assert torch.equal(output(model, inputs), before)  # zero factors again after the swap


def test_saved_folder_applied_to_a_fresh_base_samples_like_the_trained_model(trained, tmp_path):
    model, inputs, *_ = trained
    folder = save_adapter_folder(model, tmp_path / "style", BASE_ID, {"steps": 3, "dataset": "synthetic"})
    config = read_adapter_config(folder)
    assert (config.settings.rank, config.settings.alpha, config.base_model_id) == (4, 4.0, BASE_ID)
    assert config.provenance["steps"] == 3 and "code_version" in config.provenance
    fresh = tiny_model()
    apply_adapters(fresh, [(folder, 1.0)], base_model_id=BASE_ID)
    assert_fp32_close(output(fresh, inputs), output(model, inputs))
    size = (folder / "adapter.safetensors").stat().st_size
    assert size < 0.05 * sum(p.numel() * 4 for p in fresh.parameters())  # a few % of the model's float32 size


def test_saving_never_overwrites_a_folder_that_is_not_an_adapter(trained, tmp_path):
    model = trained[0]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an adapter folder"):
        save_adapter_folder(model, other, BASE_ID)
    assert (other / "keep.txt").read_text() == "mine"


def adamw(params):
    return torch.optim.AdamW(params, lr=1e-2)


def test_resuming_from_the_adapter_and_optimizer_state_continues_exactly():
    """What a trainer checkpoints for an adapter run (adapter_state_dict + the optimizer) resumes bit-exactly."""
    settings = LoraSettings(rank=4)
    torch.manual_seed(7)
    straight = tiny_model().requires_grad_(True)
    params = prepare_for_adapter_training(straight, settings)
    optimizer = adamw(params)
    train_steps(straight, params, steps=2, optimizer=optimizer)
    saved_adapter = {k: v.clone() for k, v in adapter_state_dict(straight).items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())  # state_dict() shares the live moment tensors
    train_steps(straight, params, steps=2, optimizer=optimizer, seed=4)

    torch.manual_seed(8)  # another initialisation: everything must come from the checkpoint
    resumed = tiny_model().requires_grad_(True)
    params = prepare_for_adapter_training(resumed, settings)
    load_adapter_state_dict(resumed, saved_adapter)
    optimizer = adamw(params)
    optimizer.load_state_dict(saved_optimizer)
    train_steps(resumed, params, steps=2, optimizer=optimizer, seed=4)
    assert all(
        torch.equal(a, b) for a, b in zip(adapter_state_dict(resumed).values(), adapter_state_dict(straight).values())
    )


def test_gradient_checkpointing_gives_the_adapter_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = tiny_model().requires_grad_(True)
        params = prepare_for_adapter_training(model, LoraSettings(rank=2))
        model.set_gradient_checkpointing(checkpointing)
        with torch.no_grad():
            for p in params:
                p.normal_(0, 0.05)
        model.train()
        model(**model_inputs(model)).square().mean().backward()
        grads.append([p.grad.clone() for p in params])
    for plain, recomputed in zip(*grads):
        assert_fp32_close(recomputed, plain)
