"""The laion download's shard tasks on a local Ray cluster give the same shards as local processes."""

from __future__ import annotations

import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dpweb_helpers import LocalWebServer

from data_pipeline.__main__ import main
from data_pipeline.shards import iter_tar_samples

if not os.environ.get("CI"):
    pytest.importorskip("ray", reason="the ray extra is not installed")  # in CI a missing ray fails below


def shard_content(out_dir):
    return {
        os.path.relpath(p, out_dir): list(iter_tar_samples(p))
        for p in sorted(glob.glob(os.path.join(str(out_dir), "*", "*.tar")))
    }


def test_laion_shards_on_a_local_ray_cluster(tmp_path, image_bytes, capsys):
    import ray  # noqa: F401 -- fails loudly in CI when the extra is missing

    with LocalWebServer() as server:
        urls = [server.add_image(f"/r/{i}.jpg", image_bytes("jpg", 48, 40, seed=i)) for i in range(9)]
        urls.append(server.url("/r/missing.jpg"))
        pq.write_table(
            pa.table({"URL": urls, "TEXT": [f"ray picture {i}" for i in range(10)]}), tmp_path / "meta.parquet"
        )
        common = [
            str(tmp_path / "meta.parquet"),
            "--shard-size",
            "3",
            "--sizes",
            "16,32",
            "--val-fraction",
            "0.4",
            "--allow-network",
            "127.0.0.0/8",
            "--no-progress",
            "--retries",
            "0",
        ]
        assert main(["laion", *common, "--out", str(tmp_path / "ray"), "--ray", "local", "--ray-cpus", "2"]) == 0
        assert "9 samples in 4/4 shards" in capsys.readouterr().out
        assert main(["laion", *common, "--out", str(tmp_path / "local"), "--processes", "1"]) == 0
    ray_manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert ray_manifest["totals"]["samples"] == 9 and ray_manifest["failures"] == {"http_404": 1}
    assert ray_manifest["totals"]["shards"] == 4
    assert shard_content(tmp_path / "ray") == shard_content(tmp_path / "local")
    # A rerun on Ray finds every shard complete and starts no cluster.
    assert main(["laion", *common, "--out", str(tmp_path / "ray"), "--ray", "local"]) == 0
    assert "(4 already complete)" in capsys.readouterr().out
