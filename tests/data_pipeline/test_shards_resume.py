"""A build killed with SIGKILL mid-shard resumes to exactly the content of an uninterrupted build."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

from data_pipeline.__main__ import main


def _tars(out_dir):
    return {
        os.path.relpath(p, out_dir): open(p, "rb").read()
        for p in sorted(glob.glob(os.path.join(out_dir, "*", "*.tar")))
    }


def _manifest(out_dir):
    manifest = json.load(open(os.path.join(out_dir, "manifest.json")))
    manifest.pop("created")
    return manifest


def test_killed_build_resumes_to_identical_shards(tmp_path, image_bytes):
    root = tmp_path / "images"
    root.mkdir()
    rows = []
    for i in range(10):
        (root / f"{i:02d}.jpg").write_bytes(image_bytes("jpg", 40 + i, 36, seed=i))
        rows.append(json.dumps({"file_name": f"{i:02d}.jpg", "text": f"image number {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    args = ["--sizes", "16,32", "--shard-size", "3", "--val-fraction", "0.3", "--processes", "1", "--no-progress"]
    assert main(["folder", str(root), "--out", str(tmp_path / "ref"), *args]) == 0

    # Item 7 (shard 2) becomes a named pipe: reading it blocks, so the run stops there for sure.
    blocked = root / "07.jpg"
    saved = blocked.read_bytes()
    blocked.unlink()
    os.mkfifo(blocked)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_pipeline", "folder", str(root), "--out", str(out), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        while not glob.glob(str(out / "32" / "00002.tar.tmp-*")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the build never reached shard 2"
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert sorted(os.listdir(out / "16")) == ["00000.tar", "00000_stats.json", "00001.tar", "00001_stats.json"] + [
        n for n in os.listdir(out / "16") if ".tmp-" in n
    ]
    assert not (out / "manifest.json").exists()

    blocked.unlink()
    blocked.write_bytes(saved)
    assert main(["folder", str(root), "--out", str(out), *args]) == 0
    assert _tars(out) == _tars(tmp_path / "ref")
    assert len(_tars(out)) == 8
    assert _manifest(out) == _manifest(tmp_path / "ref")
    assert not glob.glob(str(out / "*" / "*.tmp-*"))
