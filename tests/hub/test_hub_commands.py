"""Names everywhere a model is accepted (train --init, convert, sampling --model/--upsampler), two processes
fetching at once, and Ctrl-C during a download; all against the local stand-in release."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from finetune.__main__ import build_parser as finetune_parser
from finetune.__main__ import main as finetune_main
from finetune.hub import cached_model_dir, ensure_model, list_cached_models
from finetune.model_folder import load_model_folder
from finetune.train.config import config_from_args
from finetune.train.model_init import InitError, planned_image_size, setup_model
from sampling.__main__ import main as sampling_main
from sampling.outputs import read_parameters

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST_SAMPLING = ["--steps", "3", "--upsample-steps", "3", "--device", "cpu", "--quiet"]


def child_env(hub_env) -> dict[str, str]:
    return {**os.environ, **hub_env["env"], "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


# `python -m finetune fetch NAME --quiet` with Python's own Ctrl-C handler, whatever SIGINT disposition the suite was
# started with (a background job of a non-interactive shell inherits SIGINT ignored).
FETCH_WITH_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['finetune', 'fetch', sys.argv[1], '--quiet']; runpy.run_module('finetune', run_name='__main__')"
)


def start_fetch(hub_env, name: str = "glide-base") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", FETCH_WITH_CTRL_C, name],
        env=child_env(hub_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


# ------------------------------------------------------------------------------------ processes
def read_line(stream, timeout_s: float = 60.0) -> str:
    ready, _, _ = select.select([stream], [], [], timeout_s)
    assert ready, "no output in time"
    return stream.readline()


def test_two_processes_fetch_once(hub_env):
    server = hub_env["server"]
    server.faults.gate = threading.Event()  # the first download stalls half-way until the second is waiting
    first = start_fetch(hub_env)
    wait_until(lambda: server.gets("base.pt"))
    second = start_fetch(hub_env)
    try:
        waiting = read_line(second.stderr)
    finally:
        server.faults.gate.set()
    assert waiting.startswith("waiting for another process fetching glide-base")
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert "glide-base: fetched into" in outs[0][0]
    assert "glide-base: already in" in outs[1][0]  # it waited for the first instead of downloading
    assert len(server.gets("base.pt")) == 1
    assert list_cached_models() == ["glide-base"]


def test_ctrl_c_during_download_keeps_a_resumable_prefix(hub_env):
    server = hub_env["server"]
    server.faults.gate = threading.Event()  # the download stalls half-way: Ctrl-C lands mid-body
    part = hub_env["cache"] / "downloads" / "base.pt.part"
    child = start_fetch(hub_env)
    try:
        wait_until(lambda: part.is_file() and part.stat().st_size > 200_000)
        child.send_signal(signal.SIGINT)
        try:
            _, err = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            pytest.fail(f"fetch did not stop within 60 s of Ctrl-C; stdout {out!r}, stderr {err!r}")
    finally:
        server.faults.gate.set()
    assert child.returncode == 130
    assert err.strip().startswith("interrupted") and "\n" not in err.strip()
    assert list_cached_models() == [] and not any((hub_env["cache"] / "models").glob("*"))
    kept = part.stat().st_size
    assert 0 < kept < (hub_env["dir"] / "base.pt").stat().st_size
    server.faults.gate = None
    ensure_model("glide-base")
    assert server.gets("base.pt")[-1].range == f"bytes={kept}-"


# ------------------------------------------------------------------------------------ finetune
def test_train_init_by_name(hub_env):
    assert planned_image_size("glide-base", "") == 16  # known from the manifest, before any download
    assert hub_env["server"].requests == []
    setup = setup_model("glide-base")  # no --vocab-path: GPT-2's files came with the package into the folder
    assert setup.source == "folder" and setup.tokenizer.name == "gpt2" and setup.options["image_size"] == 16
    original = torch.load(hub_env["dir"] / "base.pt", weights_only=True)
    assert all(torch.equal(setup.model.state_dict()[k], v) for k, v in original.items())
    with pytest.raises(InitError, match="'glide' is a pipeline .*e.g. glide-base"):
        setup_model("glide")


def test_train_command_fine_tunes_from_a_name(hub_env, tmp_path, capsys):
    sys.path.insert(0, str(REPO_ROOT / "tests" / "train"))  # the trainer tests' shard writer
    try:
        from train_synthetic_shards import write_shards
    finally:
        sys.path.pop(0)
    data = write_shards(tmp_path / "shards", n=8, size=16, per_shard=8)
    args = [
        "train",
        "--init",
        "glide-base",
        "--data",
        str(data),
        "--run-dir",
        str(tmp_path / "run"),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--val-samples",
        "0",
        "--sample-every",
        "-1",
        "--checkpoint-every",
        "-1",
        "--no-progress",
    ]
    assert finetune_main(args) == 0, capsys.readouterr().err
    assert "done: 1 steps" in capsys.readouterr().out
    trained = load_model_folder(tmp_path / "run" / "model")
    assert trained.tokenizer.name == "gpt2" and trained.options["image_size"] == 16
    assert json.loads((tmp_path / "run" / "model" / "provenance.json").read_text())["init_checkpoint"] == "glide-base"
    assert finetune_main([*args[:2], "glide", *args[3:5], "--run-dir", str(tmp_path / "run2")]) == 2
    assert "'glide' is a pipeline" in capsys.readouterr().err


def test_vocab_flag_has_one_name_and_an_alias(tmp_path):
    parser = finetune_parser()
    for flag in ("--vocab-path", "--vocab"):
        args = parser.parse_args(
            ["train", "--run-dir", str(tmp_path), "--data", "d", "--init", "glide-base", flag, "bpe/"]
        )
        assert config_from_args(args).vocab_path == "bpe/"
        assert parser.parse_args(["convert", "x.pt", "--out", "o", flag, "bpe/"]).vocab_path == "bpe/"
        assert sampling_parser_vocab(flag) == "bpe/"


def sampling_parser_vocab(flag: str) -> str:
    from sampling.__main__ import build_parser

    argv = ["generate", "a boat", flag, "bpe/"]
    return build_parser(argv).parse_args(argv).vocab


def test_convert_by_name(hub_env, tmp_path, capsys):
    out = tmp_path / "glide-base-fp16"
    assert finetune_main(["convert", "glide-base", "--out", str(out), "--fp16"]) == 0
    assert f"wrote model folder {out}" in capsys.readouterr().out
    loaded = load_model_folder(out)
    assert loaded.config["storage_dtype"] == "float16" and loaded.tokenizer.name == "gpt2"
    assert json.loads((out / "provenance.json").read_text())["release_name"] == "glide-base"
    assert finetune_main(["convert", "glide-base", "--out", str(tmp_path / "x"), "--preset", "glide-upsample"]) == 2
    assert finetune_main(["convert", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "y")]) == 2
    assert "--preset is required" in capsys.readouterr().err
    assert finetune_main(["convert", "glide", "--out", str(tmp_path / "z")]) == 2
    assert "'glide' is a pipeline (glide-base + glide-upsample)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ sampling
def test_comic_page_with_model_glide(hub_env, tmp_path, capsys, monkeypatch):
    out = tmp_path / "comic"
    args = ["comic", "shapes_story", "--model", "glide", "--out", str(out), "--panel-size", "128", *FAST_SAMPLING]
    assert sampling_main(args) == 0, capsys.readouterr().err
    assert list_cached_models() == ["glide-base", "glide-upsample"]  # the pipeline name fetched both
    assert list(out.glob("page-*.png"))
    meta = json.loads((out / "comic.json").read_text())
    model = read_parameters(out / meta["panels"][0]["file"])["model"]
    assert model.startswith("glide-base@") and "+glide-upsample@" in model
    requests_made = len(hub_env["server"].requests)
    # reruns (offline too) use the cache; --no-upsample never fetches an upsampler it does not need
    with monkeypatch.context() as patch:
        patch.setenv("AUTOCOMICS_OFFLINE", "1")
        assert sampling_main(args + ["--overwrite"]) == 0
    assert len(hub_env["server"].requests) == requests_made


def test_sampling_names_fetch_only_what_is_used(hub_env, tmp_path, capsys, monkeypatch):
    args = [
        "generate",
        "a boat",
        "--model",
        "glide-inpaint",
        "--no-upsample",
        "--out",
        str(tmp_path / "o"),
        *FAST_SAMPLING,
    ]
    assert sampling_main(args) == 0, capsys.readouterr().err
    assert list_cached_models() == ["glide-base-inpaint"]
    assert (
        sampling_main(
            [
                "generate",
                "a boat",
                "--model",
                "glide-base",
                "--upsampler",
                "glide-base",
                "--out",
                str(tmp_path / "p"),
                *FAST_SAMPLING,
            ]
        )
        == 2
    )
    assert "is a base model, not an upsampler" in capsys.readouterr().err
    monkeypatch.setenv("AUTOCOMICS_OFFLINE", "1")
    assert (
        sampling_main(
            ["generate", "a boat", "--model", "glide-upsample-inpaint", "--out", str(tmp_path / "q"), *FAST_SAMPLING]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert f"looked in {cached_model_dir('glide-upsample-inpaint')}" in err and "\n" not in err


def test_an_existing_path_wins_over_a_name(hub_env, tmp_path, monkeypatch, capsys):
    ensure_model("glide-base")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "glide").mkdir()  # a folder that is no model
    assert sampling_main(["generate", "a boat", "--model", "glide", "--out", str(tmp_path / "o"), *FAST_SAMPLING]) == 2
    assert "glide is not a model" in capsys.readouterr().err
