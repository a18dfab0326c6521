"""File-system faults in every command that writes: `--out` naming a file, a read-only disk, a full disk.

Each must end with one line `error: ...` naming the path, a non-zero exit status and no traceback, and leave what an
earlier run wrote as it was. Tests run as root, which chmod does not stop, so a read-only disk is simulated
in-process (the os-level calls that create or change files under a folder fail with EROFS, as the kernel would
answer), and a full disk by running the command with a small RLIMIT_FSIZE: every write past it really fails in the
kernel (EFBIG), including those made by torch's and safetensors' own C++/Rust writers.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from rlimited import run_limited

from data_pipeline.__main__ import main as data_main
from data_pipeline.fsutil import disk_writes
from finetune.__main__ import main as finetune_main
from finetune.model import build_model, get_preset
from sampling.__main__ import main as sampling_main

MAINS = {"data_pipeline": data_main, "finetune": finetune_main, "sampling": sampling_main}
COMMANDS = ["generate", "comic", "synthetic", "train", "convert"]
SAMPLE = ["--steps", "2", "--no-upsample", "--device", "cpu", "--quiet"]
TRAIN = [
    "--init",
    "scratch",
    "--preset",
    "tiny-base",
    "--batch-size",
    "2",
    "--val-samples",
    "0",
    "--sample-every",
    "-1",
    "--checkpoint-every",
    "1",
    "--no-progress",
    "--threads",
    "1",
    "--no-export-model",
]
# Per command, a file size limit that lets the run start but not finish its writes: train and convert get past their
# small files (config, tokenizer) and fail on the weights, written by safetensors.
FILE_SIZE_LIMIT = {"generate": 1024, "comic": 1024, "synthetic": 1024, "train": 2 << 20, "convert": 2 << 20}
SCRIPT = "title: t\npages:\n  - panels:\n      - caption: a boat at sea\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    (root / "script.yaml").write_text(SCRIPT)
    assert (
        data_main(
            [
                "synthetic",
                "--out",
                str(root / "shards"),
                "--count",
                "8",
                "--sizes",
                "32",
                "--shard-size",
                "8",
                "--processes",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    torch.manual_seed(0)
    torch.save(build_model(get_preset("tiny-base")).state_dict(), root / "base.pt")
    return root


def command(name: str, inputs: Path, out: Path, again: bool = False) -> list[str]:
    """argv of `name` writing to `out`; `again`: a second run that has something new to write there."""
    if name == "generate":
        return ["sampling", "generate", "a red boat" if again else "a boat", "-n", "1", "--out", str(out), *SAMPLE]
    if name == "comic":
        redraw = ["--guidance", "4", "--overwrite"] if again else []
        return [
            "sampling",
            "comic",
            str(inputs / "script.yaml"),
            "--out",
            str(out),
            "--panel-size",
            "64",
            *SAMPLE,
            *redraw,
        ]
    if name == "synthetic":
        return [
            "data_pipeline",
            "synthetic",
            "--out",
            str(out),
            "--count",
            "4" if again else "2",
            "--sizes",
            "32",
            "--shard-size",
            "2",
            "--processes",
            "1",
            "--no-progress",
        ]
    if name == "train":
        resume = ["--max-steps", "2", "--resume", "latest"] if again else ["--max-steps", "1"]
        return ["finetune", "train", "--data", str(inputs / "shards"), "--run-dir", str(out), *TRAIN, *resume]
    return ["finetune", "convert", str(inputs / "base.pt"), "--preset", "tiny-base", "--out", str(out)]


def run_in_process(argv: list[str]) -> int:
    return MAINS[argv[0]](argv[1:])


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def kept(before: dict[str, str], after: dict[str, str], name: str) -> bool:
    """What the earlier run wrote is unchanged (a training run may append to its logs; its checkpoints count)."""
    if name == "train":
        before = {k: v for k, v in before.items() if k.startswith("checkpoints")}
    return all(after.get(k) == v for k, v in before.items())


def assert_one_line_error(err: str, path: Path) -> None:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert str(path) in errors[0], err


@pytest.fixture(scope="module")
def earlier_runs(inputs, tmp_path_factory) -> dict[str, Path]:
    """One successful run of each command: the data a failed rerun must leave alone."""
    root = tmp_path_factory.mktemp("earlier")
    outs = {}
    for name in COMMANDS:
        outs[name] = root / name
        assert run_in_process(command(name, inputs, outs[name])) == 0, name
    return outs


def copy_of_earlier(earlier_runs, name: str, disk: Path) -> Path:
    out = disk / name
    shutil.copytree(earlier_runs[name], out)
    return out


@pytest.mark.parametrize("name", COMMANDS)
def test_out_that_is_a_file(name, inputs, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_bytes(b"precious")
    for target in (out, out / "below"):
        capsys.readouterr()
        assert run_in_process(command(name, inputs, target)) != 0
        assert_one_line_error(capsys.readouterr().err, out)
        assert out.read_bytes() == b"precious"


def fake_read_only_disk(monkeypatch, disk: Path) -> None:
    """Make the os-level calls that create, change or remove files under `disk` fail as on a read-only mount."""
    disk = os.path.realpath(disk)

    def on_disk(path) -> bool:
        if isinstance(path, int):
            return False
        full = os.path.realpath(os.fsdecode(os.fspath(path)))
        return full == disk or full.startswith(disk + os.sep)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(os.fspath(path)))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def fake_open(file, mode="r", *args, **kwargs):
        if on_disk(file) and any(flag in mode for flag in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if on_disk(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if on_disk(path):
            if os.path.exists(path):  # the kernel answers EEXIST first
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(os.fspath(path)))
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def refusing(real, paths=1):
        def fake(*args, **kwargs):
            for path in args[:paths]:
                if on_disk(path):
                    refuse(path)
            return real(*args, **kwargs)

        return fake

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(tarfile, "bltn_open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    for name, paths in (
        ("replace", 2),
        ("rename", 2),
        ("remove", 1),
        ("unlink", 1),
        ("rmdir", 1),
        ("chmod", 1),
        ("utime", 1),
    ):
        monkeypatch.setattr(os, name, refusing(getattr(os, name), paths))


@pytest.mark.parametrize("name", COMMANDS)
def test_read_only_disk(name, inputs, earlier_runs, tmp_path, capsys, monkeypatch):
    out = copy_of_earlier(earlier_runs, name, tmp_path)
    before = digests(out)
    capsys.readouterr()
    with monkeypatch.context() as patched:
        fake_read_only_disk(patched, tmp_path)
        status = run_in_process(command(name, inputs, out, again=True))
    assert status != 0
    assert_one_line_error(capsys.readouterr().err, tmp_path)
    assert kept(before, digests(out), name)


def test_the_read_only_simulation_refuses_writes(tmp_path, monkeypatch):
    (tmp_path / "old").write_text("old")
    with monkeypatch.context() as patched:
        fake_read_only_disk(patched, tmp_path)
        for write in (
            lambda: (tmp_path / "new").write_text("x"),
            lambda: os.makedirs(tmp_path / "dir"),
            lambda: open(tmp_path / "old", "a"),
            lambda: os.replace(tmp_path / "old", tmp_path / "x"),
        ):
            with pytest.raises(OSError) as info:
                write()
            assert info.value.errno == errno.EROFS
        os.makedirs(tmp_path, exist_ok=True)
        assert (tmp_path / "old").read_text() == "old"


@pytest.mark.parametrize("name", COMMANDS)
def test_full_disk(name, inputs, earlier_runs, tmp_path):
    out = copy_of_earlier(earlier_runs, name, tmp_path)
    before = digests(out)
    proc = run_limited("RLIMIT_FSIZE", FILE_SIZE_LIMIT[name], *command(name, inputs, out, again=True))
    assert proc.returncode != 0, proc.stdout
    assert_one_line_error(proc.stderr, tmp_path)
    assert "File too large" in proc.stderr
    assert kept(before, digests(out), name)


class _FullDisk(io.RawIOBase):
    """A file that takes 1000 bytes, then fails like a full disk."""

    def __init__(self):
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.size + len(data) > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.size += len(data)
        return len(data)


def test_torch_write_failures_become_os_errors_naming_the_path(tmp_path):
    target = tmp_path / "optimizer.pt"
    with pytest.raises(OSError) as info:
        with disk_writes(target):
            torch.save({"state": torch.zeros(10_000)}, _FullDisk())  # torch reports it as a RuntimeError
    assert info.value.filename == str(target) and "disk full" in info.value.strerror
    with pytest.raises(RuntimeError, match="not about the disk"):
        with disk_writes(target):
            raise RuntimeError("not about the disk")
