"""Trimmed vocabularies: a tokenizer that keeps some ids (the rest read one unknown row), model folders trimmed to
the tokens of their captions by `finetune trim-vocab`, exactly the same outputs for captions of kept tokens."""

from __future__ import annotations

import json

import pytest
import torch

from finetune.__main__ import main as finetune_main
from finetune.model import get_preset, resolve_options
from finetune.model_folder import ModelFolderError, load_model_folder
from finetune.model_id import folder_model_id
from finetune.tokenizers import KEPT_TOKENS_FILE, CLIPTokenizer, get_tokenizer
from finetune.vocab_trim import trim_model_folder, used_token_ids
from tests.random_models import save_random_model_folder

CAPTIONS = ["a red circle on a white background", "a small blue square in the top left"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("trim")
    source = save_random_model_folder(root / "full", get_preset("tiny-base"), seed=3)
    trimmed = root / "trimmed"
    report = trim_model_folder(source, CAPTIONS, trimmed)
    return source, trimmed, report


def test_a_kept_vocabulary_maps_other_ids_to_the_unknown_row(tmp_path):
    full = get_tokenizer("clip", 16)
    kept = used_token_ids(full, ["a red circle"])
    assert kept[0] == CLIPTokenizer.pad_token and len(kept) == 6  # pad, start, "a", "red", "circle", end
    trimmed = get_tokenizer("clip", 16)
    trimmed.keep_only(kept)
    assert trimmed.vocab_size == len(kept) + 1 and trimmed.pad_token == 0
    tokens, mask = trimmed.encode(["a red circle", "a green circle"])
    assert tokens[0, :5].tolist() == [kept.index(i) for i in full.encode(["a red circle"])[0][0, :5].tolist()]
    assert tokens[1, 2].item() == len(kept)  # "green" is not kept: the unknown row
    assert torch.equal(mask, full.encode(["a red circle", "a green circle"])[1])
    assert torch.equal(trimmed.empty(2)[0], torch.zeros(2, 16, dtype=torch.long))
    written = trimmed.save_files(tmp_path)
    assert (tmp_path / KEPT_TOKENS_FILE) in written
    again = get_tokenizer("clip", 16, tmp_path)
    assert again.vocab_size == trimmed.vocab_size and torch.equal(again.encode(["a green circle"])[0], tokens[1:])


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"tokenizer": "gpt2", "ids": [0]}), "expected"),
        (json.dumps({"tokenizer": "clip", "ids": [0, 0]}), "distinct"),
        (json.dumps({"tokenizer": "clip", "ids": [0, 49408]}), "integers in"),
        (json.dumps({"tokenizer": "clip", "ids": [5, 6]}), "padding token"),
        (json.dumps({"tokenizer": "clip", "ids": [0, "1"]}), "integers in"),
    ],
)
def test_a_bad_kept_tokens_file_is_refused(tmp_path, content, message):
    get_tokenizer("clip", 16).save_files(tmp_path)
    (tmp_path / KEPT_TOKENS_FILE).write_text(content)
    with pytest.raises(ValueError, match=message):
        get_tokenizer("clip", 16, tmp_path)


def test_trimmed_folder_gives_the_same_outputs_for_kept_captions(folders):
    source, trimmed, report = folders
    assert report["rows_before"] == 49408 and report["kept"] < 30
    dropped_rows = report["rows_before"] - report["kept"] - 1  # fp32 rows of xf_width floats
    saved = report["bytes_before"] - report["bytes_after"]  # less the small kept_tokens.json
    assert saved >= 0.999 * dropped_rows * get_preset("tiny-base")["xf_width"] * 4
    full, small = load_model_folder(source), load_model_folder(trimmed)
    assert small.options["token_rows"] == report["kept"] + 1 and full.options["token_rows"] == 0
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 64, 64, generator=g), torch.tensor([10, 900])
    with torch.no_grad():
        want = full.model(x, t, *full.tokenizer.encode(CAPTIONS))
        got = small.model(x, t, *small.tokenizer.encode(CAPTIONS))
        empty = small.model(x, t, *small.tokenizer.empty(2))
        unknown = small.model(x, t, *small.tokenizer.encode(["a zebra on mars", "sailboat"]))
    assert torch.equal(got, want)
    assert torch.equal(empty, full.model(x, t, *full.tokenizer.empty(2)))
    assert torch.isfinite(unknown).all()
    assert folder_model_id(trimmed) != folder_model_id(source)
    # an untrimmed folder's config.json does not record token_rows: its bytes (and model id) are as before the option
    assert "token_rows" not in json.loads((source / "config.json").read_text())["options"]
    provenance = json.loads((trimmed / "provenance.json").read_text())
    assert provenance["vocabulary_trimmed"]["kept_tokens"] == report["kept"]


def test_a_trimmed_folder_without_its_kept_ids_is_refused_in_one_line(folders, tmp_path):
    _, trimmed, _ = folders
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in trimmed.iterdir():
        if file.name != KEPT_TOKENS_FILE:
            (broken / file.name).write_bytes(file.read_bytes())
    with pytest.raises(ModelFolderError, match="token embedding rows"):
        load_model_folder(broken)


def test_token_rows_beyond_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match="token_rows"):
        resolve_options({**get_preset("tiny-base"), "token_rows": 60000})
    with pytest.raises(ValueError, match="more than the clip vocabulary"):
        resolve_options({**get_preset("tiny-base"), "token_rows": 49409, "tokenizer": "clip"})


def test_trim_vocab_command(folders, tmp_path, capsys):
    source, _, _ = folders
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS) + "\n")
    out = tmp_path / "out"
    assert finetune_main(["trim-vocab", str(source), "--out", str(out), "--captions", str(captions)]) == 0
    assert "kept" in capsys.readouterr().out and (out / KEPT_TOKENS_FILE).is_file()
    assert finetune_main(["trim-vocab", str(out), "--out", str(tmp_path / "again"), "--captions", str(captions)]) != 0
    assert "trimmed already" in capsys.readouterr().err
    assert finetune_main(["trim-vocab", str(source), "--out", str(tmp_path / "x")]) != 0
    err = capsys.readouterr().err
    assert "--captions FILE" in err and err.count("\n") == 1
