"""LoRA layers on GLIDE's models: every target layer is reached, scale 0 is the base, bad settings are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from finetune.adapters import DEFAULT_TARGETS, AdapterError, LoraSettings, add_lora, remove_lora
from finetune.adapters.lora import KNOWN_TARGETS, lora_layers, set_active_adapters, target_module_names
from finetune.model.layers import PointwiseConv1d
from tests.adapters.helpers import VARIANTS, model_inputs, output, randomise_lora, tiny_model
from tests.tolerances import assert_fp32_close


def test_pointwise_conv_is_the_kernel1_conv_on_channels_last_input():
    conv = PointwiseConv1d(8, 12).requires_grad_(False)
    x = torch.randn(2, 5, 8)
    expected = nn.functional.conv1d(x.transpose(1, 2), conv.weight, conv.bias).transpose(1, 2)
    assert conv.weight.shape == (12, 8, 1)  # OpenAI's checkpoint layout
    assert_fp32_close(conv(x), expected)


@pytest.mark.parametrize("preset", VARIANTS)
def test_default_targets_exist_in_every_variant(preset):
    model = tiny_model(preset)
    found = set(target_module_names(model, DEFAULT_TARGETS).values())
    assert found == set(DEFAULT_TARGETS)


@pytest.mark.parametrize("preset", VARIANTS)
def test_every_target_layer_changes_the_output(preset):
    """A LoRA update on any one target layer alone (every target adapters know, the residual blocks' convolutions
    included) changes the model's output: no layer is bypassed (the attention projections used to be applied from
    outside their modules, where a wrapper changed nothing)."""
    model = tiny_model(preset)
    inputs = model_inputs(model)
    base = output(model, inputs)
    add_lora(model, rank=2, targets=tuple(KNOWN_TARGETS))
    randomise_lora(model)
    layers = dict(lora_layers(model))
    assert set(layers) == set(target_module_names(model, KNOWN_TARGETS))
    assert any(isinstance(layer.get_base_layer(), nn.Conv2d) for layer in layers.values())
    saved_b = {name: layer.lora_B["default"].weight.clone() for name, layer in layers.items()}
    unchanged = []
    for name in layers:
        with torch.no_grad():
            for other, other_layer in layers.items():
                other_layer.lora_B["default"].weight.copy_(saved_b[other] if other == name else 0)
        if torch.allclose(output(model, inputs), base, rtol=0, atol=1e-6):
            unchanged.append(name)
    assert not unchanged, f"LoRA on these layers does not change the output: {unchanged}"


@pytest.mark.parametrize("preset", VARIANTS)
def test_scale_zero_is_the_base_and_scale_one_is_not(preset):
    model = tiny_model(preset)
    inputs = model_inputs(model)
    base = output(model, inputs)
    add_lora(model, rank=4, alpha=8)
    randomise_lora(model)
    set_active_adapters(model, {"default": 0.0})
    assert_fp32_close(output(model, inputs), base)
    set_active_adapters(model, {"default": 1.0})
    assert not torch.allclose(output(model, inputs), base, atol=1e-4)


def test_a_fresh_adapter_changes_nothing_and_removing_it_restores_the_modules():
    model = tiny_model()
    inputs = model_inputs(model)
    base = output(model, inputs)
    keys = list(model.state_dict())
    settings = add_lora(model, rank=4)
    assert settings == LoraSettings(4, 4.0, DEFAULT_TARGETS)
    assert torch.equal(output(model, inputs), base)  # B starts at zero
    randomise_lora(model)
    remove_lora(model)
    assert not list(lora_layers(model)) and list(model.state_dict()) == keys
    assert torch.equal(output(model, inputs), base)


def test_only_the_asked_targets_are_wrapped():
    model = tiny_model()
    add_lora(model, rank=2, targets=["encoder_kv", "mlp.c_fc"])
    names = [name for name, _ in lora_layers(model)]
    assert names and all(n.endswith(".encoder_kv") or n.endswith(".mlp.c_fc") for n in names)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "rank 0 must be an integer in 1..512"),
        ({"rank": 100_000}, "rank 100000"),
        ({"rank": 4, "alpha": -1.0}, "alpha -1.0"),
        ({"rank": 4, "alpha": float("inf")}, "alpha inf"),
        ({"rank": 4, "targets": ["qkv", "conv"]}, "unknown LoRA target(s) 'conv'"),
        ({"rank": 4, "targets": []}, "no LoRA targets"),
    ],
)
def test_bad_settings_are_refused_in_one_line(kwargs, message):
    model = tiny_model()
    with pytest.raises(AdapterError) as info:
        add_lora(model, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not list(lora_layers(model))


def test_targets_absent_from_a_model_are_skipped_but_none_present_is_an_error():
    model = tiny_model()
    model.transformer_proj = nn.Identity()  # a model whose pooled caption does not enter this way
    settings = add_lora(model, rank=2)
    assert "transformer_proj" not in settings.targets and "qkv" in settings.targets
    with pytest.raises(AdapterError, match="none of the LoRA targets"):
        add_lora(nn.Sequential(nn.Conv2d(3, 3, 1)), rank=2)
