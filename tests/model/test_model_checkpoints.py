"""OpenAI .pt loading (weights_only), strict key checks, model folders and `convert`."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch
from safetensors.torch import load_file
from tolerances import assert_fp32_close

from finetune.__main__ import main as finetune_main
from finetune.bundled_models import bundled_model_path
from finetune.convert import convert
from finetune.model import build_model, get_preset, resolve_options
from finetune.model_folder import (
    ModelFolderError,
    load_model_folder,
    load_openai_checkpoint,
    load_state_dict_strict,
    refused_global_name,
    save_model_folder,
)
from finetune.tokenizers import get_tokenizer

VARIANTS = ["tiny_base", "tiny_upsample", "tiny_base_inpaint", "tiny_upsample_inpaint"]


def run_case(model, case):
    extra = {k: case[k] for k in ("low_res", "inpaint_image", "inpaint_mask") if k in case}
    with torch.no_grad():
        return model(case["x"], case["timesteps"], tokens=case["tokens"], mask=case["mask"], **extra)


@pytest.mark.parametrize("name", VARIANTS)
def test_openai_layout_pt_loads_strictly(glide_fixtures, tmp_path, name):
    # A .pt exactly as OpenAI ships it: torch.save of a plain state_dict.
    pt = tmp_path / f"{name}.pt"
    torch.save(load_file(glide_fixtures / f"{name}_weights.safetensors"), pt)
    options = json.loads((glide_fixtures / "cases.json").read_text())[name]["options"]
    model = build_model(options).eval()
    load_state_dict_strict(model, load_openai_checkpoint(pt))
    case = load_file(glide_fixtures / f"{name}_case.safetensors")
    assert (run_case(model, case) - case["output"]).abs().max().item() <= 1e-4


def test_mismatched_keys_are_refused_by_name(glide_fixtures, tmp_path):
    state = load_file(glide_fixtures / "tiny_base_weights.safetensors")
    state.pop("final_ln.weight")
    state["extra.bias"] = torch.zeros(3)
    state["out.2.bias"] = torch.zeros(5)
    options = json.loads((glide_fixtures / "cases.json").read_text())["tiny_base"]["options"]
    with pytest.raises(ModelFolderError) as err:
        load_state_dict_strict(build_model(options), state)
    text = str(err.value)
    assert "1 missing key(s) (first: final_ln.weight)" in text
    assert "1 unexpected key(s) (first: extra.bias)" in text
    assert "out.2.bias: checkpoint [5] vs model [6]" in text


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_with_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code-ran"
    pt = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode(marker)}, pt)
    with pytest.raises(ModelFolderError, match="refusing to load .*could run code"):
        load_openai_checkpoint(pt)
    assert not marker.exists()


class _CallsOsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_calling_os_system_is_refused_by_name(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    pt = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _CallsOsSystem(marker)}, pt)
    with pytest.raises(ModelFolderError, match=r"refusing to load .*references the Python object os\.system"):
        load_openai_checkpoint(pt)
    assert finetune_main(["convert", str(pt), "--preset", "tiny-base", "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to load") and "os.system" in err and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    "message, name",
    [
        ("Unsupported global: GLOBAL pathlib.Path.touch was not an allowed global by default.", "pathlib.Path.touch"),
        (
            "Weights only load failed.\n\n"
            "Trying to load unsupported GLOBAL posix.system whose module posix is blocked.",
            "os.system",
        ),
        ("WeightsUnpickler error: Unsupported global: GLOBAL getattr was not an allowed global", "getattr"),
        ("refused GLOBAL 'nt.system'.", "os.system"),
        ("Weights only load failed.\nUnsupported operand 149", None),
    ],
)
def test_refused_global_names_from_any_wording(message, name):
    assert refused_global_name(message) == name


def test_non_checkpoints_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFolderError, match="not a readable PyTorch checkpoint"):
        load_openai_checkpoint(junk)
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(ModelFolderError, match="does not hold a state_dict"):
        load_openai_checkpoint(listing)
    with pytest.raises(FileNotFoundError):
        load_openai_checkpoint(tmp_path / "absent.pt")


def test_model_folder_round_trip_with_ema_and_fp16(tmp_path):
    torch.manual_seed(0)
    options = get_preset("tiny-upsample")
    model = build_model(options).eval()
    for p in model.parameters():  # the fresh model zero-initialises output layers; make outputs non-trivial
        p.data.normal_(0, 0.05)
    ema = {k: v + 0.01 for k, v in model.state_dict().items()}
    tokenizer = get_tokenizer("clip", options["text_ctx"])
    folder = save_model_folder(
        tmp_path / "m",
        model,
        tokenizer=tokenizer,
        ema_state_dict=ema,
        provenance={"note": "test"},
        preset="tiny-upsample",
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 1 and config["preset"] == "tiny-upsample" and config["tokenizer"] == "clip"
    assert resolve_options(config["options"]) == model.options and config["has_ema"]
    assert json.loads((folder / "provenance.json").read_text())["note"] == "test"
    assert not list(tmp_path.glob(".*"))

    raw = load_model_folder(folder, use_ema=False)
    with_ema = load_model_folder(folder)
    for k, v in model.state_dict().items():
        assert torch.equal(raw.model.state_dict()[k], v)
        assert torch.equal(with_ema.model.state_dict()[k], ema[k])
    tokens, mask = raw.tokenizer.encode(["a red boat"])
    x, t, low = torch.randn(1, 3, 64, 64), torch.tensor([10]), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        # the same weights in a separately built model: equal up to kernel choice, not necessarily bit for bit
        assert_fp32_close(
            raw.model(x, t, tokens=tokens, mask=mask, low_res=low), model(x, t, tokens=tokens, mask=mask, low_res=low)
        )

    half = save_model_folder(tmp_path / "h", model, tokenizer=tokenizer, dtype=torch.float16)
    assert all(v.dtype == torch.float16 for v in load_file(half / "model.safetensors").values())
    loaded = load_model_folder(half)
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert (half / "model.safetensors").stat().st_size < 0.55 * (folder / "model.safetensors").stat().st_size


def test_overwriting_replaces_a_model_folder_but_never_other_folders(tmp_path):
    model, tokenizer = build_model(get_preset("tiny-base")), get_tokenizer("clip", 16)
    folder = save_model_folder(tmp_path / "m", model, tokenizer=tokenizer, ema_state_dict=model.state_dict())
    save_model_folder(folder, model, tokenizer=tokenizer)  # no EMA this time: the stale file must go
    assert not (folder / "ema.safetensors").exists() and load_model_folder(folder).config["has_ema"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folders left behind
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"...")
    with pytest.raises(FileExistsError, match="not a model folder"):
        save_model_folder(precious, model, tokenizer=tokenizer)
    assert (precious / "holiday.jpg").read_bytes() == b"..."


def test_folder_with_mismatched_weights_is_refused(tmp_path):
    folder = save_model_folder(
        tmp_path / "m", build_model(get_preset("tiny-base")), tokenizer=get_tokenizer("clip", 16)
    )
    config = json.loads((folder / "config.json").read_text())
    config["options"]["xf_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="missing key.*transformer.resblocks.2"):
        load_model_folder(folder)
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        load_model_folder(tmp_path)


def test_convert_writes_a_loadable_folder(tmp_path):
    torch.manual_seed(1)
    model = build_model(get_preset("tiny-base-inpaint")).eval()
    pt = tmp_path / "ckpt.pt"
    torch.save(model.state_dict(), pt)
    folder = convert(pt, "tiny-base-inpaint", tmp_path / "out")
    loaded = load_model_folder(folder)
    assert (folder / "bpe_simple_vocab_16e6.txt.gz").is_file()
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["converted_from"] == "openai-glide" and len(provenance["init_checkpoint_sha256"]) == 64
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)
    with pytest.raises(ModelFolderError, match="preset tiny-upsample"):
        convert(pt, "tiny-upsample", tmp_path / "wrong")
    with pytest.raises(ValueError, match="unknown model preset"):
        convert(pt, "tiny-nonexistent", tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


def test_convert_copies_the_gpt2_vocab(glide_fixtures, tmp_path):
    options = {**get_preset("tiny-base"), "tokenizer": "gpt2"}
    pt = tmp_path / "gpt2.pt"
    torch.save(build_model(options).state_dict(), pt)
    from finetune.model import options as option_module

    option_module.PRESETS["test-gpt2-tiny"] = options
    try:
        for folder, vocab in ((tmp_path / "shipped", None), (tmp_path / "given", glide_fixtures / "gpt2_bpe")):
            convert(pt, "test-gpt2-tiny", folder, vocab_path=vocab)
            assert sorted(p.name for p in folder.glob("*.gz")) == ["encoder.json.gz", "vocab.bpe.gz"]
            for f in folder.glob("*.gz"):
                f.rename(tmp_path / f.name)  # the folder's own copy is what loads
            with pytest.raises(FileNotFoundError, match="no GPT-2 BPE files"):
                load_model_folder(folder)
            for name in ("encoder.json.gz", "vocab.bpe.gz"):
                (tmp_path / name).rename(folder / name)
            tokens, _ = load_model_folder(folder).tokenizer.encode(["a painting of a boat on a beach"])
            assert tokens[0, :8].tolist() == [64, 12036, 286, 257, 8848, 319, 257, 10481]
    finally:
        del option_module.PRESETS["test-gpt2-tiny"]


def test_bundled_models_absent_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown bundled model"):
        bundled_model_path("huge")
    try:
        path = bundled_model_path("base")
    except FileNotFoundError as e:
        assert "no bundled base model" in str(e)
    else:
        assert (path / "config.json").is_file()


def test_streamed_safetensors_load_like_save_file(tmp_path):
    """write_safetensors(stream=True) (tensor by tensor, for memory-mapped sources) writes the same tensors."""
    from safetensors.torch import load_file

    from finetune.model_folder import write_safetensors

    state = {
        "w": torch.randn(3, 5),
        "half": torch.randn(4).half(),
        "bf": torch.randn(2, 2).bfloat16(),
        "step": torch.tensor(7),
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "view": torch.arange(12.0).reshape(3, 4)[:, 1],
    }
    for dtype in (None, torch.float16):
        write_safetensors(tmp_path / "plain.safetensors", state, dtype)
        write_safetensors(tmp_path / "streamed.safetensors", state, dtype, stream=True)
        plain, streamed = load_file(tmp_path / "plain.safetensors"), load_file(tmp_path / "streamed.safetensors")
        assert plain.keys() == streamed.keys() == state.keys()
        for key in state:
            assert plain[key].dtype == streamed[key].dtype and torch.equal(plain[key], streamed[key]), key
    assert state["w"].isfinite().all()  # the sources are untouched
