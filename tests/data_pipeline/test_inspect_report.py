"""`inspect DIR`: totals, histograms, failure reasons and the contact sheet agree with what was built."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
from PIL import Image
from rlimited import run_limited

from data_pipeline.__main__ import main
from data_pipeline.runner import build_dataset
from data_pipeline.shard_report import format_report, inspect_dataset
from data_pipeline.shards import (
    MAX_TAR_MEMBER_BYTES,
    Failure,
    Sample,
    WriterConfig,
    assemble_tar,
    iter_tar_samples,
    plan_shards,
)


def _produce(task):
    for index, item in enumerate(task.items):
        if isinstance(item, str):
            yield Failure(index, item)
        else:
            data, caption, size = item
            yield Sample(index=index, image=data, caption=caption, source="unit", width=size[0], height=size[1])


@pytest.fixture
def dataset(tmp_path, image_bytes):
    items = [
        (image_bytes("jpg", 30, 30, seed=i), " ".join(["word"] * (3 + 4 * i)), (100 * (i + 1), 900)) for i in range(7)
    ]
    items[3] = "http_404"
    items[5] = "timeout"
    config = WriterConfig(tmp_path / "ds", sizes=(16, 32), shard_size=3, val_fraction=0.5)
    _, manifest = build_dataset(plan_shards(items, 3), _produce, config, progress=False)
    return config.out_dir, manifest


def test_report_matches_the_manifest(dataset, tmp_path):
    out, manifest = dataset
    sheet = tmp_path / "sheet" / "contact.png"
    report = inspect_dataset(out, samples=4, seed=1, sheet_path=str(sheet))
    assert report["inspected_size"] == 32 and report["sizes"] == [16, 32]
    assert report["samples"] == manifest["totals"]["samples"] == 5
    assert report["items"] == 7 and report["failures"] == {"http_404": 1, "timeout": 1}
    assert report["splits"] == manifest["splits"] and sum(report["splits"].values()) == 5
    assert report["sources"] == {"unit": 5}
    # captions of 3, 7, 11, 19, 27 words; original short sides 100, 200, 300, 500, 700
    assert report["caption_words"] == {"0-4": 1, "5-9": 1, "10-14": 1, "15-19": 1, "20-29": 1, "30-49": 0, "50+": 0}
    assert report["original_short_side"]["64-127"] == 1 and report["original_short_side"]["256-511"] == 2
    assert report["original_short_side"]["512-1023"] == 1
    with Image.open(sheet) as img:
        assert img.mode == "RGB" and img.width >= 2 * 192 and img.height >= 2 * 192
    text = format_report(report)
    assert "http_404" in text and "contact sheet" in text
    same = inspect_dataset(out, size=16, samples=4, seed=1)
    assert same["samples"] == 5 and same["contact_sheet"] is None


def test_cli_json_output_and_errors(dataset, tmp_path, capsys):
    out, _ = dataset
    assert main(["inspect", out, "--json", "--samples", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 5 and report["contact_sheet"].endswith("contact_sheet.png")
    with pytest.raises(SystemExit, match="no shards of size 99"):
        main(["inspect", out, "--size", "99"])
    with pytest.raises(SystemExit, match="not a directory"):
        main(["inspect", str(tmp_path / "missing")])


SPARSE_SIZE = 6 * 2**30  # what the member claims; the tar itself stays 10 KB


def _add(tar: tarfile.TarFile, name: str, data: bytes, pax: dict | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.pax_headers = pax or {}
    tar.addfile(info, io.BytesIO(data))


def _sparse_member(tar: tarfile.TarFile, name: str, real_size: int) -> None:
    """A GNU sparse (PAX 1.0) member of `real_size` bytes of which only the last 512 are stored."""
    sparse_map = f"1\n{real_size - 512}\n512\n".encode().ljust(512, b"\0")
    _add(
        tar,
        name,
        sparse_map + b"x" * 512,
        {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": name,
            "GNU.sparse.realsize": str(real_size),
        },
    )


def _write_tar(path, samples: list[tuple[str, dict[str, bytes]]], sparse_image_of: str | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for key, files in samples:
            if key == sparse_image_of:
                _sparse_member(tar, f"{key}.jpg", SPARSE_SIZE)
            for ext, data in files.items():
                _add(tar, f"{key}.{ext}", data)


def _meta(**fields) -> bytes:
    return json.dumps({"caption": "a red boat", "split": "train", "source": "unit", **fields}).encode()


def test_iter_tar_samples_skips_and_names_members_above_the_cap(tmp_path):
    path = str(tmp_path / "sparse.tar")
    _write_tar(path, [("000000000", {"txt": b"a", "json": _meta()})], sparse_image_of="000000000")
    assert os.path.getsize(path) < 16_384 and SPARSE_SIZE > MAX_TAR_MEMBER_BYTES
    oversized: list[str] = []
    samples = list(iter_tar_samples(path, lazy=("jpg",), oversized=oversized))
    assert [(k, sorted(f)) for k, f in samples] == [("000000000", ["json", "txt"])]
    assert oversized == ["000000000.jpg"]
    dest = str(tmp_path / "rewritten.tar")  # the merge/dedupe rewrite path skips it too, and says so
    with pytest.warns(UserWarning, match="skipped 1 tar member"):
        assemble_tar(dest, [path])
    assert [sorted(f) for _, f in iter_tar_samples(dest)] == [["json", "txt"]]


def test_inspect_cli_skips_a_sparse_6gb_member_and_reports_it(tmp_path, image_bytes):
    out = tmp_path / "ds"
    good = image_bytes("jpg", 30, 30)
    _write_tar(
        str(out / "64" / "00000.tar"),
        [
            ("000000000", {"txt": b"a red boat", "json": _meta(width=30, height=30)}),
            ("000000001", {"jpg": good, "txt": b"a red boat", "json": _meta(width=30, height=30)}),
        ],
        sparse_image_of="000000000",
    )
    # 3 GiB of address space: without the cap, reading the member fails fast instead of eating the machine's memory
    proc = run_limited(
        "RLIMIT_AS", 3 * 2**30, "data_pipeline", "inspect", str(out), "--json", "--samples", "2", timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["oversized_members"] == 1 and report["samples"] == 2
    assert report["contact_sheet"] and os.path.exists(report["contact_sheet"])


def test_inspect_counts_and_skips_bad_metadata(tmp_path, image_bytes, capsys):
    out = tmp_path / "ds"
    jpg = image_bytes("jpg", 30, 30)
    bad = [
        b'{"caption": "x", "width": "NaN", "height": 40}',
        b'{"caption": "x", "width": NaN, "height": 40}',
        b'{"caption": "x", "width": Infinity, "height": 40}',
        b'{"caption": "x", "width": true, "height": 4}',
        b'{"caption": ["x"]}',
        b'{"caption": "x", "split": {"a": 1}}',
        b"[1, 2]",
        b"not json",
        b'"text"',
    ]
    samples = [(f"{i:09d}", {"jpg": jpg, "txt": b"x", "json": raw}) for i, raw in enumerate(bad)]
    samples.append((f"{len(bad):09d}", {"jpg": jpg, "txt": b"x", "json": _meta(width=300, height=200)}))
    _write_tar(str(out / "64" / "00000.tar"), samples)
    assert main(["inspect", str(out), "--samples", "0"]) == 0
    text = capsys.readouterr().out
    assert f"skipped {len(bad)} samples with unreadable or mistyped metadata" in text
    report = inspect_dataset(str(out), samples=0)
    assert report["bad_metadata"] == len(bad) and report["samples"] == 1
    assert report["original_short_side"]["128-255"] == 1 and report["splits"]["train"] == 1
