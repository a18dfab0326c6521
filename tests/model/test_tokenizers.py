"""Tokenizers: GPT-2 ids equal the reference GLIDE tokenizer's; CLIP framing; the empty caption; vocab paths."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from safetensors.torch import load_file

from finetune.tokenizers import get_tokenizer


@pytest.fixture(scope="module")
def gpt2_cases(glide_fixtures):
    return json.loads((glide_fixtures / "cases.json").read_text())["gpt2_tokenizer"]


@pytest.fixture(scope="module")
def gpt2(glide_fixtures):
    return get_tokenizer("gpt2", 128, glide_fixtures / "gpt2_bpe")


def test_gpt2_ids_match_reference_for_every_prompt(gpt2, gpt2_cases):
    assert gpt2.vocab_size == gpt2_cases["n_vocab"] == 50257
    prompts = [c["prompt"] for c in gpt2_cases["cases"]]
    tokens, mask, truncated = gpt2.encode(prompts, return_truncated=True)
    for row, case in enumerate(gpt2_cases["cases"]):
        assert tokens[row].tolist() == case["padded_128"], case["prompt"]
        assert mask[row].tolist() == [bool(m) for m in case["mask_128"]], case["prompt"]
        assert truncated[row] == (len(case["ids"]) > 128)
    assert any(truncated), "the fixture's long prompt must be reported as truncated"


def test_gpt2_matches_the_forward_fixture_tokens_at_text_ctx_16(glide_fixtures):
    prompts = json.loads((glide_fixtures / "cases.json").read_text())["tiny_base"]["prompts"]
    case = load_file(glide_fixtures / "tiny_base_case.safetensors")
    tokens, mask = get_tokenizer("gpt2", 16, glide_fixtures / "gpt2_bpe").encode(prompts)
    assert torch.equal(tokens, case["tokens"])
    assert torch.equal(mask, case["mask"].bool())


def test_gpt2_reads_plain_and_hugging_face_layouts(glide_fixtures, gpt2_cases, tmp_path):
    src = glide_fixtures / "gpt2_bpe"
    plain, hf = tmp_path / "plain", tmp_path / "hf"
    plain.mkdir(), hf.mkdir()
    for gz_name, plain_name, hf_name in [
        ("encoder.json.gz", "encoder.json", "vocab.json"),
        ("vocab.bpe.gz", "vocab.bpe", "merges.txt"),
    ]:
        data = gzip.decompress((src / gz_name).read_bytes())
        (plain / plain_name).write_bytes(data)
        (hf / hf_name).write_bytes(data)
    prompt = gpt2_cases["cases"][2]
    for directory in (plain, hf):
        tokens, _ = get_tokenizer("gpt2", 128, directory).encode([prompt["prompt"]])
        assert tokens[0].tolist() == prompt["padded_128"]


def test_gpt2_missing_vocab_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        get_tokenizer("gpt2", 16, "does/not/exist")
    with pytest.raises(FileNotFoundError, match="no GPT-2 BPE files"):
        get_tokenizer("gpt2", 16, tmp_path)


def test_gpt2_vocabulary_ships_with_the_package(gpt2_cases, glide_fixtures):
    """No vocab path: the packaged GPT-2 files, the same bytes as the reference fixture's, give the reference ids."""
    from finetune.tokenizers import packaged_gpt2_dir

    for name in ("encoder.json.gz", "vocab.bpe.gz"):
        assert (packaged_gpt2_dir() / name).read_bytes() == (glide_fixtures / "gpt2_bpe" / name).read_bytes()
    tokenizer = get_tokenizer("gpt2", 128)
    for case in gpt2_cases["cases"]:
        tokens, _ = tokenizer.encode([case["prompt"]])
        assert tokens[0].tolist() == case["padded_128"]


def test_clip_frames_captions_and_truncates():
    tok = get_tokenizer("clip", 8)
    assert tok.vocab_size == 49408
    tokens, mask, truncated = tok.encode(
        ["a boat", "one two three four five six seven eight nine"], return_truncated=True
    )
    assert tokens[0, 0].item() == 49406 and tokens[0, 3].item() == 49407
    assert mask[0].tolist() == [True] * 4 + [False] * 4
    assert tokens[1, 0].item() == 49406 and tokens[1, -1].item() == 49407 and mask[1].all()
    assert truncated == [False, True]


@pytest.mark.parametrize("name", ["clip", "gpt2"])
def test_blank_caption_is_the_empty_caption(name, glide_fixtures):
    tok = get_tokenizer(name, 12, glide_fixtures / "gpt2_bpe" if name == "gpt2" else None)
    empty_tokens, empty_mask = tok.empty(3)
    assert empty_tokens.shape == (3, 12) and not empty_mask.any()
    tokens, mask = tok.encode(["", "", ""])
    assert torch.equal(tokens, empty_tokens) and torch.equal(mask, empty_mask)


@pytest.mark.parametrize("name", ["clip", "gpt2"])
def test_saved_files_make_a_folder_self_contained(name, glide_fixtures, tmp_path):
    vocab = glide_fixtures / "gpt2_bpe" if name == "gpt2" else None
    tok = get_tokenizer(name, 32, vocab)
    folder = tmp_path / "model"
    written = tok.save_files(folder)
    assert written and all(p.parent == folder and p.is_file() for p in written)
    again = get_tokenizer(name, 32, folder)
    captions = ["A café at night, watercolor", "UPPER case"]
    assert all(torch.equal(a, b) for a, b in zip(tok.encode(captions), again.encode(captions)))


def test_unknown_tokenizer_and_bad_captions(glide_fixtures):
    with pytest.raises(ValueError, match="unknown tokenizer"):
        get_tokenizer("sentencepiece", 16)
    with pytest.raises(TypeError, match="caption 1"):
        get_tokenizer("clip", 16).encode(["ok", None])
