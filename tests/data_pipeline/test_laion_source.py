"""`python -m data_pipeline laion` end to end against a local server: both schemas, remote parquet,
filter-only, and a killed run that resumes to exactly the content of an uninterrupted one."""

from __future__ import annotations

import glob
import io
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
from dpweb_helpers import LocalWebServer, Reply

from data_pipeline.__main__ import main
from data_pipeline.shards import iter_tar_samples

LOCAL = ["--allow-network", "127.0.0.0/8", "--no-progress", "--retries", "0", "--timeout", "2"]


def shard_content(out_dir):
    return {
        os.path.relpath(p, out_dir): list(iter_tar_samples(p))
        for p in sorted(glob.glob(os.path.join(str(out_dir), "*", "*.tar")))
    }


def manifest(out_dir):
    with open(os.path.join(out_dir, "manifest.json")) as fh:
        m = json.load(fh)
    m.pop("created")
    return m


def serve_images(server, image_bytes, n, kinds=("jpg", "png", "webp")):
    urls = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        urls.append(server.add_image(f"/i/{i}.{kind}", image_bytes(kind, 40 + i % 7, 36, seed=i), f"image/{kind}"))
    return urls


def test_laion400m_and_laion2b_files_into_shards(tmp_path, image_bytes):
    with LocalWebServer() as server:
        urls = serve_images(server, image_bytes, 8)
        old = pa.table(
            {
                "SAMPLE_ID": [str(i) for i in range(6)],
                "URL": urls[:4] + [server.url("/missing.jpg"), "file:///etc/passwd"],
                "TEXT": ["a boat at sea", "a boat in port", "beach huts", "   ", "a boat lost", "a boat file"],
                "HEIGHT": [36] * 6,
                "WIDTH": [40] * 6,
                "LICENSE": ["cc-by"] * 6,
                "NSFW": ["UNLIKELY"] * 6,
                "similarity": [0.35, 0.32, 0.31, 0.4, 0.4, 0.4],
            }
        )
        new = pa.table(
            {
                "URL": urls[4:] + [urls[0]],
                "TEXT": ["boat one", "boat two", "boat three", "boat four", "dup boat"],
                "WIDTH": [40.0] * 5,
                "HEIGHT": [36.0] * 5,
                "similarity": [0.3] * 5,
                "punsafe": [0.01, 0.01, 0.99, 0.01, 0.01],
                "pwatermark": [0.1] * 5,
                "aesthetic": [6.0] * 5,
            }
        )
        pq.write_table(old, tmp_path / "laion400m.parquet")
        pq.write_table(new, tmp_path / "laion2b.parquet")
        out = tmp_path / "out"
        args = [
            "laion",
            str(tmp_path / "laion400m.parquet"),
            str(tmp_path / "laion2b.parquet"),
            "--out",
            str(out),
            "--keywords",
            "boat",
            "--shard-size",
            "3",
            "--sizes",
            "32,64",
            "--val-fraction",
            "0.3",
            "--processes",
            "1",
            *LOCAL,
        ]
        assert main(args) == 0
        m = manifest(out)
        assert m["sources"][0]["type"] == "laion" and m["sources"][0]["rows_read"] == 11
        assert [i["schema"] for i in m["sources"][0]["inputs"]] == ["laion-400m", "laion-2b/aesthetics"]
        assert m["filters"]["keywords"] == ["boat"]
        assert m["filters"]["rejected"] == {"bad_scheme": 1, "empty_caption": 1, "keywords": 1, "duplicate_url": 1}
        assert m["failures"] == {"http_404": 1} and m["totals"]["samples"] == 6
        assert m["splits"]["train"] + m["splits"]["val"] == 6
        assert sorted(os.listdir(out / "32")) == sorted(os.listdir(out / "64"))
        keys32 = [k for p in sorted(glob.glob(str(out / "32" / "*.tar"))) for k, _ in iter_tar_samples(p)]
        keys64 = [k for p in sorted(glob.glob(str(out / "64" / "*.tar"))) for k, _ in iter_tar_samples(p)]
        assert keys32 == keys64 and len(keys32) == 6
        metas = [
            json.loads(f["json"]) for p in sorted(glob.glob(str(out / "64" / "*.tar"))) for _, f in iter_tar_samples(p)
        ]
        first = metas[0]
        assert first["caption"] == "a boat at sea" and first["license"] == "cc-by" and first["source"] == "laion"
        assert first["similarity"] == 0.35 and first["attributes"]["sample_id"] == "0"
        assert any(m_["attributes"].get("aesthetic") == 6.0 for m_ in metas)

        # Filtering with the punsafe flag needs that column in every file: a clear error, exit 2.
        bad = [
            "laion",
            str(tmp_path / "laion400m.parquet"),
            "--out",
            str(tmp_path / "o2"),
            "--max-punsafe",
            "0.5",
            *LOCAL,
        ]
        assert main(bad) == 2

        # Rerun: nothing to do, same content.
        before = shard_content(out)
        assert main(args) == 0
        assert shard_content(out) == before


def test_remote_parquet_and_filter_only(tmp_path, image_bytes, capsys):
    with LocalWebServer() as server:
        urls = serve_images(server, image_bytes, 3)
        buf = io.BytesIO()
        pq.write_table(pa.table({"URL": urls, "TEXT": ["one boat", "two boats", "three"]}), buf)
        remote = server.add("/meta/part-00000.parquet", Reply(200, buf.getvalue()))
        out = tmp_path / "out"
        assert main(["laion", remote, "--out", str(out), "--filter-only", *LOCAL]) == 0
        assert "kept 3 of 3 rows" in capsys.readouterr().out
        assert not (out / "64").exists()
        fetched = glob.glob(str(out / "_inputs" / "*part-00000.parquet"))
        assert len(fetched) == 1 and server.hits["/meta/part-00000.parquet"] == 1
        kept = pq.read_table(out / "laion_kept.parquet")
        assert kept.column("source_file").to_pylist() == ["part-00000.parquet"] * 3
        assert main(["laion", remote, "--out", str(out), "--processes", "1", *LOCAL]) == 0
        assert server.hits["/meta/part-00000.parquet"] == 1  # fetched once
        assert manifest(out)["totals"]["samples"] == 3
        # a remote parquet on a private address is refused unless allowed
        assert main(["laion", remote, "--out", str(tmp_path / "o3"), "--no-progress"]) == 2


def test_killed_laion_run_resumes_to_identical_content(tmp_path, image_bytes):
    with LocalWebServer() as server:
        urls = serve_images(server, image_bytes, 12)
        rows = {"URL": urls + [server.url("/nothing.jpg")], "TEXT": [f"picture {i}" for i in range(13)]}
        pq.write_table(pa.table(rows), tmp_path / "meta.parquet")
        common = [
            str(tmp_path / "meta.parquet"),
            "--shard-size",
            "4",
            "--sizes",
            "16,32",
            "--val-fraction",
            "0.5",
            "--processes",
            "1",
            "--threads",
            "2",
            *LOCAL,
        ]
        assert main(["laion", *common, "--out", str(tmp_path / "ref")]) == 0

        # Shard 1's images now answer slowly, so a second run is surely mid-shard when killed.
        for i in range(4, 8):
            server.add(
                f"/i/{i}.{('jpg', 'png', 'webp')[i % 3]}",
                Reply(200, image_bytes(("jpg", "png", "webp")[i % 3], 40 + i % 7, 36, seed=i), delay=1.5),
            )
        out = tmp_path / "out"
        proc = subprocess.Popen(
            [sys.executable, "-m", "data_pipeline", "laion", *common, "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=os.getcwd(),
        )
        try:
            give_up = time.time() + 60
            while not (out / "16" / "00000_stats.json").exists():
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.time() < give_up, "the run never finished shard 0"
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
        assert not (out / "16" / "00001_stats.json").exists() and not (out / "manifest.json").exists()
        for i in range(4, 8):  # back to normal speed
            server.add(
                f"/i/{i}.{('jpg', 'png', 'webp')[i % 3]}",
                Reply(200, image_bytes(("jpg", "png", "webp")[i % 3], 40 + i % 7, 36, seed=i)),
            )
        assert main(["laion", *common, "--out", str(out)]) == 0
    assert shard_content(out) == shard_content(tmp_path / "ref")
    m_out, m_ref = manifest(out), manifest(tmp_path / "ref")
    for key in ("totals", "splits", "failures"):
        assert m_out[key] == m_ref[key]
    assert not glob.glob(str(out / "*" / "*.tmp-*"))
