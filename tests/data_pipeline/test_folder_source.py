"""`folder DIR` end to end: imagefolder metadata.jsonl and CSV (file or id) layouts, bad rows counted."""

from __future__ import annotations

import glob
import json
import os

import pytest

from data_pipeline.__main__ import main
from data_pipeline.shards import iter_tar_samples
from data_pipeline.sources.folder import FolderError, read_folder_items


def _samples(out_dir, size):
    found = {}
    for path in sorted(glob.glob(os.path.join(out_dir, str(size), "*.tar"))):
        for key, files in iter_tar_samples(path):
            found[key] = json.loads(files["json"])
    return found


def test_imagefolder_metadata_jsonl(tmp_path, image_bytes):
    root = tmp_path / "imgs"
    (root / "train").mkdir(parents=True)
    (root / "train" / "a.png").write_bytes(image_bytes("png", 50, 30, seed=1))
    (root / "b.webp").write_bytes(image_bytes("webp", 30, 50, seed=2))
    (root / "c.jpg").write_bytes(image_bytes("truncated"))
    (root / "d.gif").write_bytes(image_bytes("animated_gif"))
    rows = [
        {"file_name": "train/a.png", "text": "a red thing", "license": "CC0", "author": "Ann", "mood": "calm"},
        {"file_name": "b.webp", "text": ["a tall thing", "something tall"]},
        {"file_name": "c.jpg", "text": "broken"},
        {"file_name": "d.gif", "text": "  "},
        {"file_name": "missing.png", "text": "not there"},
        {"file_name": "../outside.png", "text": "escape"},
    ]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    out = tmp_path / "out"
    assert (
        main(
            [
                "folder",
                str(root),
                "--out",
                str(out),
                "--sizes",
                "24",
                "--resize-mode",
                "pad",
                "--processes",
                "2",
                "--shard-size",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    samples = list(_samples(out, 24).values())
    assert [s["caption"] for s in samples] == ["a red thing", "a tall thing"]
    assert samples[0]["license"] == "CC0" and samples[0]["attribution"] == "Ann"
    assert samples[0]["attributes"] == {"mood": "calm"}
    assert (samples[0]["width"], samples[0]["height"]) == (50, 30)
    assert samples[1]["captions"] == ["a tall thing", "something tall"]
    assert all(s["source"] == "folder" for s in samples)
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["failures"] == {"empty_caption": 1, "missing_file": 1, "truncated_image": 1, "unsafe_path": 1}
    assert manifest["sources"][0]["type"] == "folder" and manifest["sources"][0]["items"] == 6
    assert manifest["resize_mode"] == "pad"


def test_csv_with_ids_and_repeated_rows(tmp_path, image_bytes):
    root = tmp_path / "imgs"
    root.mkdir()
    for i, kind in enumerate(["jpg", "png", "cmyk"]):
        ext = "png" if kind == "png" else "jpg"
        (root / f"img{i}.{ext}").write_bytes(image_bytes(kind, 40, 40, seed=i))
    (root / "labels.csv").write_text(
        'id, caption\nimg0,first caption\nimg1,"a caption, with a comma"\nimg0,second caption\nimg2,cmyk one\n'
    )
    items = read_folder_items(str(root))
    assert [it["file"] for it in items] == ["img0.jpg", "img1.png", "img2.jpg"]
    assert items[0]["captions"] == ["first caption", "second caption"]
    out = tmp_path / "out"
    assert (
        main(
            [
                "folder",
                str(root),
                "--out",
                str(out),
                "--sizes",
                "16,32",
                "--image-format",
                "png",
                "--val-fraction",
                "0.5",
                "--processes",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    samples = _samples(out, 32)
    assert len(samples) == 3 and samples["000000001"]["caption"] == "a caption, with a comma"
    assert samples["000000000"]["captions"] == ["first caption", "second caption"]
    assert all(os.path.exists(os.path.join(out, str(s), "00000.tar")) for s in (16, 32))
    names = [n for n in os.popen(f"tar tf {out}/16/00000.tar").read().split()]
    assert "000000000.png" in names


def test_csv_with_file_column_and_explicit_caption_file(tmp_path, image_bytes):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "x.jpg").write_bytes(image_bytes("jpg"))
    captions = tmp_path / "elsewhere.csv"
    captions.write_text("file,caption,url\nx.jpg,hello there,https://example.org/x.jpg\n")
    out = tmp_path / "out"
    assert (
        main(
            [
                "folder",
                str(root),
                "--captions",
                str(captions),
                "--out",
                str(out),
                "--no-progress",
                "--source-name",
                "my-photos",
            ]
        )
        == 0
    )
    (sample,) = _samples(out, 64).values()
    assert sample["source"] == "my-photos" and sample["url"] == "https://example.org/x.jpg"


def test_unusable_folders_fail_with_a_clear_message(tmp_path):
    with pytest.raises(FolderError, match="no caption file"):
        read_folder_items(str(tmp_path))
    (tmp_path / "a.csv").write_text("name,label\nx,y\n")
    with pytest.raises(FolderError, match="need a file column"):
        read_folder_items(str(tmp_path))
    (tmp_path / "b.csv").write_text("file,caption\n")
    with pytest.raises(FolderError, match="choose one with --captions"):
        read_folder_items(str(tmp_path))
    (tmp_path / "a.csv").unlink()
    (tmp_path / "b.csv").unlink()
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "x.jpg", "text": "ok"}\n{broken\n')
    with pytest.raises(FolderError, match=r"metadata.jsonl:2: not valid JSON"):
        read_folder_items(str(tmp_path))
    (tmp_path / "metadata.jsonl").write_bytes(b'{"file_name": "x.jpg", "text": "caf\xe9"}\n')
    with pytest.raises(FolderError, match="not UTF-8"):
        read_folder_items(str(tmp_path))
    with pytest.raises(SystemExit, match="not a directory"):
        main(["folder", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])


def test_utf8_bom_metadata_is_accepted(tmp_path, image_bytes):
    (tmp_path / "x.jpg").write_bytes(image_bytes("jpg"))
    (tmp_path / "metadata.jsonl").write_bytes('\ufeff{"file_name": "x.jpg", "text": "café"}\n'.encode())
    assert read_folder_items(str(tmp_path))[0]["captions"] == ["café"]
