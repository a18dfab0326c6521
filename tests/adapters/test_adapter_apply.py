"""Adapter folders on model folders: applied for sampling (mixed, scaled), merged, refused on another base."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from data_pipeline.commands import Command, run_command_line
from finetune.adapters import AdapterError, add_lora, apply_adapters, merge_adapters, save_adapter_folder
from finetune.adapters.command import resolve_model_folder
from finetune.adapters.lora import lora_layers
from finetune.bundled_models import bundled_model_path
from finetune.model import get_preset
from finetune.model_folder import load_model_folder
from finetune.model_id import folder_model_id
from tests.adapters.helpers import model_inputs, output, randomise_lora
from tests.random_models import save_random_model_folder
from tests.tolerances import assert_fp32_close

ADAPTER_COMMAND = [Command("adapter", "finetune.adapters.command", "LoRA adapters")]


def make_adapter(base_folder, out, seed: int, targets=("qkv", "proj_out", "encoder_kv", "transformer_proj")):
    model = load_model_folder(base_folder).model
    add_lora(model, rank=4, alpha=8, targets=targets)
    randomise_lora(model, seed=seed)
    return save_adapter_folder(model, out, folder_model_id(base_folder))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    base = save_random_model_folder(root / "model", get_preset("tiny-base"), seed=0)
    other = save_random_model_folder(root / "other", get_preset("tiny-base"), seed=1)
    style = make_adapter(base, root / "style", seed=5)
    cast = make_adapter(base, root / "cast", seed=6, targets=("encoder_kv", "attn.c_qkv", "in_layers.2"))
    return {"root": root, "base": base, "other": other, "style": style, "cast": cast}


def loaded(folder):
    return load_model_folder(folder).model


def test_mixed_adapters_change_the_output_and_an_empty_list_restores_the_base(world):
    model = loaded(world["base"])
    inputs = model_inputs(model)
    base = output(model, inputs)
    base_id = folder_model_id(world["base"])
    applied = apply_adapters(model, [(world["style"], 1.0), (world["cast"], 0.5)], base_model_id=base_id)
    assert [(a.scale, a.metadata()["path"]) for a in applied] == [(1.0, str(world["style"])), (0.5, str(world["cast"]))]
    mixed = output(model, inputs)
    assert not torch.allclose(mixed, base, atol=1e-4)
    apply_adapters(model, [(world["style"], 1.0)], base_model_id=base_id)  # replaces, does not stack
    assert not torch.allclose(output(model, inputs), mixed, atol=1e-4)
    apply_adapters(model, [(world["style"], 0.0)], base_model_id=base_id)
    assert_fp32_close(output(model, inputs), base)
    apply_adapters(model, [], base_model_id=base_id)
    assert not list(lora_layers(model)) and torch.equal(output(model, inputs), base)


def test_merge_equals_apply(world, tmp_path):
    adapters = [(world["style"], 0.7), (world["cast"], 1.5)]
    merged_dir = merge_adapters(world["base"], adapters, tmp_path / "merged")
    merged = loaded(merged_dir)
    applied = loaded(world["base"])
    apply_adapters(applied, adapters, base_model_id=folder_model_id(world["base"]))
    inputs = model_inputs(applied)
    assert not list(lora_layers(merged))
    assert_fp32_close(output(merged, inputs), output(applied, inputs))
    provenance = json.loads((merged_dir / "provenance.json").read_text())["merged_adapters"]
    assert [a["scale"] for a in provenance["adapters"]] == [0.7, 1.5]
    assert provenance["base_model_id"] == folder_model_id(world["base"])


def test_a_renamed_copy_of_the_base_is_the_same_base(world, tmp_path):
    copy = shutil.copytree(world["base"], tmp_path / "renamed")
    apply_adapters(loaded(copy), [(world["style"], 1.0)], base_model_id=folder_model_id(copy))


def test_an_adapter_on_another_base_is_refused_in_one_line(world, tmp_path):
    model = loaded(world["other"])
    with pytest.raises(AdapterError) as info:
        apply_adapters(model, [(world["style"], 1.0)], base_model_id=folder_model_id(world["other"]))
    message = str(info.value)
    assert "was trained on model model@" in message and "not on other@" in message and "\n" not in message
    assert not list(lora_layers(model))
    with pytest.raises(AdapterError, match="was trained on model model@"):
        merge_adapters(world["other"], [(world["style"], 1.0)], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def broken_copy(world, tmp_path, edit_config=None, edit_tensors=None):
    folder = shutil.copytree(world["style"], tmp_path / "broken")
    if edit_config:
        config = json.loads((folder / "adapter_config.json").read_text())
        edit_config(config)
        (folder / "adapter_config.json").write_text(json.dumps(config))
    if edit_tensors:
        tensors = load_file(folder / "adapter.safetensors")
        edit_tensors(tensors)
        save_file(tensors, folder / "adapter.safetensors")
    return folder


@pytest.mark.parametrize(
    "edit_config, edit_tensors, message",
    [
        (lambda c: c.update(rank=10**9), None, "rank 1000000000 must be an integer"),
        (lambda c: c.update(rank="4"), None, "rank '4'"),
        (lambda c: c.update(alpha=float("nan")), None, "alpha nan"),
        (lambda c: c.update(targets=["qkv", "everything"]), None, "unknown LoRA target(s) 'everything'"),
        (lambda c: c.update(format_version=2), None, "format_version 2"),
        (lambda c: c.update(kind="dora"), None, "kind 'dora'"),
        (lambda c: c.update(base_model_id=None), None, "base_model_id None"),
        (lambda c: c.update(targets=["qkv", "proj_out", "encoder_kv"]), None, "unexpected"),
        (None, lambda t: t.pop(next(iter(t))), "missing"),
        (None, lambda t: t.update({k: torch.zeros(4, 7) for k in list(t)[:1]}), "the model needs"),
        (None, lambda t: t.update({k: v.to(torch.int32) for k, v in list(t.items())[:1]}), "dtype I32"),
    ],
)
def test_bad_adapter_folders_are_refused_before_the_model_changes(world, tmp_path, edit_config, edit_tensors, message):
    folder = broken_copy(world, tmp_path, edit_config, edit_tensors)
    model = loaded(world["base"])
    with pytest.raises(AdapterError) as info:
        apply_adapters(model, [(world["cast"], 1.0), (folder, 1.0)], base_model_id=folder_model_id(world["base"]))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not list(lora_layers(model))


def test_not_an_adapter_folder_and_garbage_files_are_refused(world, tmp_path):
    model = loaded(world["base"])
    base_id = folder_model_id(world["base"])
    with pytest.raises(AdapterError, match="is not an adapter folder"):
        apply_adapters(model, [(world["base"], 1.0)], base_model_id=base_id)
    folder = broken_copy(world, tmp_path)
    (folder / "adapter.safetensors").write_bytes(b"\x80\x04not a safetensors file")  # e.g. a pickle
    with pytest.raises(AdapterError, match="not a readable safetensors file"):
        apply_adapters(model, [(folder, 1.0)], base_model_id=base_id)
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        apply_adapters(model, [(folder, 1.0)], base_model_id=base_id)


def test_merge_command_writes_a_loadable_folder(world, tmp_path, capsys):
    out = tmp_path / "merged"
    argv = ["adapter", "merge", str(world["base"]), f"{world['style']}:0.5", str(world["cast"]), "--out", str(out)]
    assert run_command_line("finetune", "test", ADAPTER_COMMAND, argv) == 0
    assert "merged 2 adapter(s)" in capsys.readouterr().out
    expected = loaded(world["base"])
    apply_adapters(
        expected, [(world["style"], 0.5), (world["cast"], 1.0)], base_model_id=folder_model_id(world["base"])
    )
    inputs = model_inputs(expected)
    assert_fp32_close(output(loaded(out), inputs), output(expected, inputs))


def test_merge_command_errors_are_one_line(world, tmp_path, capsys):
    out = tmp_path / "merged"
    argv = ["adapter", "merge", str(world["other"]), str(world["style"]), "--out", str(out)]
    assert run_command_line("finetune", "test", ADAPTER_COMMAND, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: adapter ") and err.count("\n") == 1 and not out.exists()
    argv = ["adapter", "merge", str(world["base"]), str(world["style"]), "--out", str(world["base"])]
    assert run_command_line("finetune", "test", ADAPTER_COMMAND, argv) == 2
    assert "base model's own folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_command_line("finetune", "test", ADAPTER_COMMAND, ["adapter", "merge", "m", "style:lots", "--out", "x"])
    assert exit_info.value.code == 2 and "'lots' is not a number" in capsys.readouterr().err


def test_model_names_resolve_to_model_folders(world):
    assert resolve_model_folder("bundled") == bundled_model_path("base")
    assert resolve_model_folder(str(world["base"])) == world["base"]
    with pytest.raises(AdapterError, match="is a pipeline"):
        resolve_model_folder("glide")
    with pytest.raises(AdapterError, match="no such model folder or model name"):
        resolve_model_folder("no-such-model")
    with pytest.raises(AdapterError, match="is not a model folder"):
        resolve_model_folder(str(world["style"]))


def test_fused_adapters_draw_what_unfused_ones_do_and_come_off_exactly(world):
    """Fusing (what sampling does: no per-image cost) adds the same updates into the weights; replacing or removing
    fused adapters puts the weights back bit for bit, however often they are swapped."""
    model = loaded(world["base"])
    inputs = model_inputs(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base_id = folder_model_id(world["base"])
    adapters = [(world["style"], 0.7), (world["cast"], 1.5)]  # the cast adapter wraps residual convolutions too
    apply_adapters(model, adapters, base_model_id=base_id)
    unfused = output(model, inputs)
    for _ in range(3):
        apply_adapters(model, adapters, base_model_id=base_id, fuse=True)
        assert all(layer.merged for _, layer in lora_layers(model))
        assert_fp32_close(output(model, inputs), unfused)
        apply_adapters(model, [(world["style"], 1.0)], base_model_id=base_id, fuse=True)
    apply_adapters(model, [], base_model_id=base_id)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
