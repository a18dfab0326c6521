"""Released models by name against a local stand-in of OpenAI's release: first fetch, reuse, resume, faults,
offline, and the cache commands."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune.__main__ import main as finetune_main
from finetune.hub import (
    HubError,
    OfflineError,
    cached_model_dir,
    ensure_model,
    fetch_model,
    list_cached_models,
    remove_cached_model,
)
from finetune.hub import convert as hub_convert_module
from finetune.hub import download as download_module
from finetune.model_folder import load_model_folder
from finetune.model_id import model_id_for


def assert_nothing_cached(cache: Path, name: str = "glide-base") -> None:
    models = cache / "models"
    leftovers = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    assert leftovers == [], leftovers  # neither the model folder nor a half-built one
    assert name not in list_cached_models()


def test_first_fetch_converts_verifies_and_records_provenance(hub_env):
    result = fetch_model("glide-base")
    assert result.downloaded and result.path == cached_model_dir("glide-base")
    loaded = load_model_folder(result.path)
    original = torch.load(hub_env["dir"] / "base.pt", weights_only=True)
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in original.items())
    assert loaded.tokenizer.name == "gpt2"  # GPT-2's vocabulary was copied in: the folder is self-contained
    assert sorted(loaded.config["tokenizer_files"]) == ["encoder.json.gz", "vocab.bpe.gz"]
    assert loaded.config["preset"] is None  # tiny shapes are not the glide-base preset; the real file is
    provenance = json.loads((result.path / "provenance.json").read_text())
    assert provenance["init_checkpoint"] == hub_env["server"].url + "base.pt"
    assert provenance["init_checkpoint_bytes"] == (hub_env["dir"] / "base.pt").stat().st_size
    assert len(hub_env["server"].gets("base.pt")) == 1
    assert not list((hub_env["cache"] / "downloads").iterdir())  # the download is gone once converted
    assert list_cached_models() == ["glide-base"]


def test_reuse_from_cache_makes_no_request(hub_env, capsys):
    ensure_model("glide-base")
    server = hub_env["server"]
    before = len(server.requests)
    assert fetch_model("glide-base").downloaded is False
    assert finetune_main(["fetch", "glide-base"]) == 0
    assert "glide-base: already in" in capsys.readouterr().out
    assert len(server.requests) == before


def test_fetch_pipeline_name_fetches_both_and_cache_commands(hub_env, capsys):
    assert finetune_main(["fetch", "glide", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "glide-base: fetched into" in out and "glide-upsample: fetched into" in out
    assert finetune_main(["cache", "list"]) == 0
    listing = capsys.readouterr().out
    assert "glide-base " in listing and "glide-upsample " in listing and "ready" in listing
    assert finetune_main(["cache", "remove", "glide-upsample"]) == 0
    assert "glide-upsample: removed" in capsys.readouterr().out
    assert list_cached_models() == ["glide-base"]
    assert finetune_main(["cache", "remove", "glide-upsample"]) == 0
    assert "not in the cache" in capsys.readouterr().out
    assert finetune_main(["fetch", "glide-huge"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line


def test_conversion_is_byte_deterministic(hub_env, tmp_path, monkeypatch):
    first = ensure_model("glide-base")
    monkeypatch.setenv("AUTOCOMICS_CACHE", str(tmp_path / "other_cache"))
    second = ensure_model("glide-base")
    assert first != second
    for name in ("model.safetensors", "config.json", "encoder.json.gz", "vocab.bpe.gz"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert model_id_for(first) == model_id_for(second)


def test_resume_after_a_cut_connection(hub_env):
    server = hub_env["server"]
    server.faults.cut_after["base.pt"] = 300_000
    folder = ensure_model("glide-base")
    gets = server.gets("base.pt")
    assert len(gets) == 2 and gets[0].range is None
    resumed_at = int(gets[1].range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 300_000  # the bytes that arrived before the cut are not fetched again
    original = torch.load(hub_env["dir"] / "base.pt", weights_only=True)
    weights = load_file(folder / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in original.items())


def test_server_that_ignores_range_restarts_cleanly(hub_env):
    server = hub_env["server"]
    server.faults.cut_after["base.pt"] = 300_000
    server.faults.ignore_range = True
    folder = ensure_model("glide-base")
    gets = server.gets("base.pt")
    assert len(gets) == 2 and gets[1].range.startswith("bytes=")  # asked to resume, answered 200: whole file
    original = torch.load(hub_env["dir"] / "base.pt", weights_only=True)
    weights = load_file(folder / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in original.items())


@pytest.mark.parametrize("status, attempts", [(404, 1), (403, 1), (500, download_module.MAX_ATTEMPTS)])
def test_http_errors(hub_env, status, attempts, capsys):
    hub_env["server"].faults.status["base.pt"] = status
    assert finetune_main(["fetch", "glide-base", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and f"HTTP {status}" in err and "\n" not in err
    assert len(hub_env["server"].gets("base.pt")) == attempts  # client errors are not retried
    assert_nothing_cached(hub_env["cache"])


def test_body_of_the_wrong_size(hub_env):
    good = (hub_env["dir"] / "base.pt").read_bytes()
    hub_env["server"].faults.body["base.pt"] = good + b"\0" * 100
    with pytest.raises(HubError, match="released file is"):
        ensure_model("glide-base")
    assert_nothing_cached(hub_env["cache"])


def serve_unsized(hub_env, monkeypatch, body: bytes) -> None:
    """Serve `body` as base.pt under a manifest that does not know the sizes (so only the contents can tell)."""
    monkeypatch.setenv("AUTOCOMICS_GLIDE_MANIFEST", str(hub_env["manifest_unsized"]))
    hub_env["server"].faults.body["base.pt"] = body


def pt_bytes(obj, tmp_path: Path) -> bytes:
    path = tmp_path / "made.pt"
    torch.save(obj, path)
    return path.read_bytes()


def test_valid_pickle_with_wrong_keys_or_shapes(hub_env, monkeypatch, tmp_path):
    upsample = torch.load(hub_env["dir"] / "upsample.pt", weights_only=True)
    serve_unsized(hub_env, monkeypatch, pt_bytes(upsample, tmp_path))
    with pytest.raises(HubError, match=r"not the released checkpoint: .*mis-shaped"):
        ensure_model("glide-base")
    assert_nothing_cached(hub_env["cache"])
    assert not list((hub_env["cache"] / "downloads").iterdir())  # a complete but wrong file is not kept
    base = torch.load(hub_env["dir"] / "base.pt", weights_only=True)
    base["extra.weight"] = torch.zeros(2)
    del base["out.2.bias"]
    serve_unsized(hub_env, monkeypatch, pt_bytes(base, tmp_path))
    with pytest.raises(HubError, match=r"1 missing key\(s\), first: out.2.bias, 1 unexpected key\(s\)"):
        ensure_model("glide-base")
    assert_nothing_cached(hub_env["cache"])
    base = torch.load(hub_env["dir"] / "base.pt", weights_only=True)
    base["out.2.bias"] = base["out.2.bias"].to(torch.complex64)  # right key and shape, not a weight
    serve_unsized(hub_env, monkeypatch, pt_bytes(base, tmp_path))
    with pytest.raises(HubError, match=r"1 tensor\(s\) that are not float weights, first: out.2.bias \(complex64\)"):
        ensure_model("glide-base")
    assert_nothing_cached(hub_env["cache"])


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_pickle_with_code_is_refused_and_never_run(hub_env, monkeypatch, tmp_path):
    marker = tmp_path / "code_ran"
    state = torch.load(hub_env["dir"] / "base.pt", weights_only=True)
    serve_unsized(hub_env, monkeypatch, pickle.dumps({**state, "payload": RunsCode(marker)}, protocol=2))
    with pytest.raises(HubError, match="not a readable PyTorch checkpoint|refusing"):
        ensure_model("glide-base")
    serve_unsized(hub_env, monkeypatch, pt_bytes({**state, "payload": RunsCode(marker)}, tmp_path))
    with pytest.raises(
        HubError, match="refusing to load .* references the Python object os.system, and unpickling it could run code"
    ):
        ensure_model("glide-base")
    assert not marker.exists()
    assert_nothing_cached(hub_env["cache"])


class DiskFillsAfter:
    """A file whose writes fail with ENOSPC once `room` bytes were written (a full disk)."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def write(self, data):
        import errno

        if self.real.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_full_disk_keeps_a_resumable_prefix(hub_env, monkeypatch, capsys):
    with monkeypatch.context() as patch:
        patch.setattr(download_module, "CHUNK_BYTES", 1 << 16)
        patch.setattr(download_module, "open", lambda *a, **k: DiskFillsAfter(open(*a, **k), 200_000), raising=False)
        assert finetune_main(["fetch", "glide-base", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no space left on the device" in err and "\n" not in err
    assert_nothing_cached(hub_env["cache"])
    part = hub_env["cache"] / "downloads" / "base.pt.part"
    kept = part.read_bytes()
    assert 0 < len(kept) <= 200_000 and (hub_env["dir"] / "base.pt").read_bytes().startswith(kept)
    ensure_model("glide-base")
    assert hub_env["server"].gets("base.pt")[-1].range == f"bytes={len(kept)}-"


class WriteRefused(DiskFillsAfter):
    """A download file whose writes fail with an error that names no file (as a write() on a device error does)."""

    def write(self, data):
        import errno

        raise OSError(errno.EIO, "Input/output error")


def test_write_fault_names_the_download_file(hub_env, monkeypatch, capsys):
    with monkeypatch.context() as patch:
        patch.setattr(download_module, "open", lambda *a, **k: WriteRefused(open(*a, **k), 0), raising=False)
        assert finetune_main(["fetch", "glide-base", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    part = hub_env["cache"] / "downloads" / "base.pt.part"
    assert err == f"error: {part}: Input/output error"
    assert_nothing_cached(hub_env["cache"])


def test_full_disk_while_converting(hub_env, monkeypatch):
    def no_space(*args, **kwargs):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(hub_convert_module, "write_model_folder", no_space)
        with pytest.raises(HubError, match="no space left on the device while converting glide-base"):
            ensure_model("glide-base")
    assert_nothing_cached(hub_env["cache"])
    assert (hub_env["cache"] / "downloads" / "base.pt.part").is_file()  # kept: no second download needed
    ensure_model("glide-base")
    assert len(hub_env["server"].gets("base.pt")) == 1


def test_offline_with_and_without_a_cache(hub_env, monkeypatch, capsys):
    monkeypatch.setenv("AUTOCOMICS_OFFLINE", "1")
    with pytest.raises(OfflineError, match=f"looked in {cached_model_dir('glide-base')}"):
        ensure_model("glide-base")
    assert finetune_main(["fetch", "glide-base"]) == 2
    err = capsys.readouterr().err.strip()
    assert "AUTOCOMICS_OFFLINE" in err and str(hub_env["cache"]) in err and "\n" not in err
    assert hub_env["server"].requests == []
    monkeypatch.delenv("AUTOCOMICS_OFFLINE")
    ensure_model("glide-base")
    requests_made = len(hub_env["server"].requests)
    monkeypatch.setenv("AUTOCOMICS_OFFLINE", "1")
    assert ensure_model("glide-base") == cached_model_dir("glide-base")
    assert len(hub_env["server"].requests) == requests_made


def test_read_only_cache(hub_env, monkeypatch, tmp_path):
    ensure_model("glide-base")
    cache = hub_env["cache"]
    before = sorted(str(p) for p in cache.rglob("*"))
    for path in [cache, *cache.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        assert ensure_model("glide-base") == cached_model_dir("glide-base")  # reading needs no writes
        assert sorted(str(p) for p in cache.rglob("*")) == before
        # root ignores permission bits; /sys refuses everyone
        unwritable = tmp_path / "ro_cache" if os.geteuid() != 0 else Path("/sys/autocomics-cache-test")
        if os.geteuid() != 0:
            unwritable.mkdir(mode=0o555)
        with pytest.raises(HubError, match=f"cannot write to the model cache {unwritable}"):
            ensure_model("glide-base", cache_dir=unwritable)
    finally:
        for path in [cache, *cache.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


def test_remove_is_refused_cleanly_for_unknown_names(hub_env):
    with pytest.raises(HubError, match="unknown model name"):
        remove_cached_model("glide-nope")
    assert remove_cached_model("glide-base") is False
