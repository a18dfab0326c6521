"""Downloading an item table into shards: every bad case counted by reason, deadlines, retry."""

from __future__ import annotations

import glob
import io
import json
import os
import time

import numpy as np
import pyarrow as pa
import pytest
import webdataset as wds
from dpweb_helpers import LOOPBACK, LocalWebServer, Reply
from PIL import Image

from data_pipeline.__main__ import main
from data_pipeline.download.client import ClientConfig
from data_pipeline.download.downloader import DownloadOptions, download_item_table, read_plan
from data_pipeline.download.items import ItemTableWriter, read_rows
from data_pipeline.download.retry import retry_failed
from data_pipeline.download.url_safety import AddressPolicy
from data_pipeline.shards import WriterConfig

SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("license", pa.string()),
        ("similarity", pa.float64()),
        ("page", pa.string()),
    ]
)


def write_items(path, rows, shard_size):
    writer = ItemTableWriter(str(path), SCHEMA, shard_size, {"shard_size": shard_size})
    writer.write(pa.Table.from_pylist(rows, schema=SCHEMA))
    writer.close()
    return str(path)


def options(**client):
    client.setdefault("address_policy", AddressPolicy(allowed_networks=LOOPBACK))
    client.setdefault("retries", 0)
    client.setdefault("read_timeout", 1.0)
    client.setdefault("total_timeout", 3.0)
    client.setdefault("max_bytes", 200_000)
    return DownloadOptions(client=ClientConfig(**client), threads=8, source="test")


def shard_members(out_dir):
    """{size/shard: [(member name, bytes)]} -- the full content of every shard."""
    content = {}
    for path in sorted(glob.glob(os.path.join(out_dir, "*", "*.tar"))):
        content[os.path.relpath(path, out_dir)] = [(k, sorted(v.items())) for k, v in _iter(path)]
    return content


def _iter(path):
    from data_pipeline.shards import iter_tar_samples

    return list(iter_tar_samples(path))


def manifest(out_dir):
    with open(os.path.join(out_dir, "manifest.json")) as fh:
        return json.load(fh)


def test_every_case_is_a_sample_or_a_counted_failure(tmp_path, image_bytes):
    with LocalWebServer() as server:
        good = {
            kind: server.add_image(f"/good/{kind}", image_bytes(kind, 60, 44, seed=i))
            for i, kind in enumerate(("jpg", "png", "webp", "cmyk", "gray", "rgba", "palette_alpha", "animated_gif"))
        }
        bad = {
            "truncated_image": server.add_image("/bad/truncated", image_bytes("truncated")),
            "corrupt_image": server.add_image("/bad/corrupt", image_bytes("corrupt"), "image/png"),
            "decompression_bomb": server.add_image("/bad/bomb", image_bytes("bomb"), "image/png"),
            "not_an_image": server.add("/bad/text", Reply(200, b"just text", {"Content-Type": "text/plain"})),
            "http_404": server.url("/bad/missing"),
            "http_500": server.add("/bad/error", Reply(500, b"<html>err</html>")),
            "timeout": server.add("/bad/hang", Reply(200, b"x" * 50, hang=True)),
            "redirect_loop": server.add("/bad/loop", Reply(302, headers={"Location": "/bad/loop"})),
            "too_large": server.add_image("/bad/huge", b"\xff\xd8" + b"0" * 300_000),
            "x_robots_tag": server.add_image("/bad/noai", image_bytes("jpg"), **{"X-Robots-Tag": "noai"}),
            "bad_scheme": "file:///etc/passwd",
            "blocked_address": "http://10.255.255.1/a.jpg",
        }
        html_page = server.add("/bad/html", Reply(200, image_bytes("html"), {"Content-Type": "text/html"}))
        other_bot = server.add_image("/good/otherbot", image_bytes("jpg", seed=9), **{"X-Robots-Tag": "otherbot: noai"})
        rows = [
            {"url": u, "caption": f"a {k} picture", "license": "CC BY 4.0", "similarity": 0.3, "page": k}
            for k, u in good.items()
        ]
        rows.append(
            {"url": other_bot, "caption": "robots for another bot", "license": None, "similarity": None, "page": None}
        )
        rows += [
            {"url": u, "caption": f"bad {k}", "license": None, "similarity": None, "page": None} for k, u in bad.items()
        ]
        rows.append(
            {"url": html_page, "caption": "an html error page", "license": None, "similarity": None, "page": None}
        )
        rows.append(
            {"url": "ftp://example.com/x.jpg", "caption": "ftp", "license": None, "similarity": None, "page": None}
        )
        never = server.add_image("/good/uncaptioned", image_bytes("jpg"))
        rows.append({"url": never, "caption": "  \t ", "license": None, "similarity": None, "page": None})
        rows.append({"url": None, "caption": "no url", "license": None, "similarity": None, "page": None})
        items = write_items(tmp_path / "items.parquet", rows, shard_size=7)
        writer = WriterConfig(out_dir=str(tmp_path / "out"), sizes=(16, 32), shard_size=7)
        started = time.monotonic()
        summary, man = download_item_table(items, writer, options(), progress=False)
        assert time.monotonic() - started < 20
        assert server.hits["/good/uncaptioned"] == 0  # empty captions are not even fetched

    expected = {reason: 1 for reason in bad}
    expected["not_an_image"] = 2  # the text body and the HTML error page
    expected["bad_scheme"] = 2  # file:// and ftp://
    expected["empty_caption"] = 1
    expected["missing_url"] = 1
    assert man["failures"] == expected
    assert man["totals"]["samples"] == len(good) + 1 and summary.ok

    samples = {}
    for shard in sorted(glob.glob(str(tmp_path / "out" / "32" / "*.tar"))):
        for sample in wds.WebDataset(shard, shardshuffle=False, empty_check=False):
            meta = json.loads(sample["json"])
            samples[meta["attributes"]["page"] if meta["attributes"] else "otherbot"] = (sample, meta)
    assert set(samples) == set(good) | {"otherbot"}
    for kind, (sample, meta) in samples.items():
        assert sample["txt"].decode() == meta["caption"]
        assert Image.open(io.BytesIO(sample["jpg"])).size == (32, 32)
        assert meta["source"] == "test" and meta["url"].startswith("http://127.0.0.1:")
        if kind != "otherbot":
            assert (meta["width"], meta["height"]) == (60, 44)
            assert meta["license"] == "CC BY 4.0" and meta["similarity"] == pytest.approx(0.3)
    first_frame = np.asarray(Image.open(io.BytesIO(samples["animated_gif"][0]["jpg"])).convert("RGB"))
    assert first_frame[..., 0].mean() > 200 and first_frame[..., 2].mean() < 60  # red, the first frame
    # failed items keep their URL and reason for retry
    stats = json.load(open(tmp_path / "out" / "16" / "00001_stats.json"))
    assert all({"key", "index", "reason"} <= set(f) for f in stats["failed_items"])


def test_shard_deadline_closes_stuck_urls_then_retry_fetches_them(tmp_path, image_bytes):
    with LocalWebServer() as server:
        rows = []
        for i in range(6):
            url = server.add_image(f"/img{i}.jpg", image_bytes("jpg", 50, 40, seed=i))
            rows.append({"url": url, "caption": f"picture {i}", "license": None, "similarity": None, "page": None})
        for i in (1, 4):  # these two hang until the shard deadline
            server.add(f"/img{i}.jpg", Reply(200, b"x" * 10, hang=True))
        items = write_items(tmp_path / "items.parquet", rows, shard_size=6)
        slow = options(read_timeout=30, total_timeout=60)
        stuck = DownloadOptions(client=slow.client, threads=8, shard_deadline=3.0, source="test")
        started = time.monotonic()
        _, man = download_item_table(
            items, WriterConfig(out_dir=str(tmp_path / "out"), shard_size=6), stuck, progress=False
        )
        assert time.monotonic() - started < 10  # not the 60 s the hung connections would take
        stats = json.load(open(tmp_path / "out" / "64" / "00000_stats.json"))
        # On a very loaded machine a good URL may also miss the deadline; the hung two always do.
        assert set(man["failures"]) == {"deadline"}
        assert {1, 4} <= {f["index"] for f in stats["failed_items"]}

        for i in (1, 4):  # the host recovers
            server.add_image(f"/img{i}.jpg", image_bytes("jpg", 50, 40, seed=i))
        result = retry_failed(str(tmp_path / "out"), {"deadline"}, progress=False)
        assert result.attempted == result.recovered == man["failures"]["deadline"]
        assert result.manifest["failures"] == {} and result.manifest["totals"]["samples"] == 6
        download_item_table(
            items, WriterConfig(out_dir=str(tmp_path / "clean"), shard_size=6), options(), progress=False
        )
    assert shard_members(tmp_path / "out") == shard_members(tmp_path / "clean")


def test_retry_cli_by_reason_leaves_the_rest_untouched(tmp_path, image_bytes):
    with LocalWebServer() as server:
        rows = []
        for i in range(9):
            url = server.add_image(f"/p{i}.png", image_bytes("png", 40, 40, seed=i), "image/png")
            rows.append({"url": url, "caption": f"png {i}", "license": None, "similarity": None, "page": str(i)})
        server.add("/p2.png", Reply(503, b"busy"))
        server.add("/p7.png", Reply(429, b"slow down"))
        server.add("/p5.png", Reply(404, b"gone"))
        items = write_items(tmp_path / "items.parquet", rows, shard_size=3)
        out = str(tmp_path / "out")
        download_item_table(
            items,
            WriterConfig(out_dir=out, shard_size=3, val_fraction=0.5),
            options(),
            progress=False,
            sources=[{"type": "test"}],
        )
        assert manifest(out)["failures"] == {"http_404": 1, "http_429": 1, "http_503": 1}
        untouched = open(os.path.join(out, "64", "00001.tar"), "rb").read()  # holds the 404 only

        server.add_image("/p2.png", image_bytes("png", 40, 40, seed=2), "image/png")
        server.add_image("/p7.png", image_bytes("png", 40, 40, seed=7), "image/png")
        server.add_image("/p5.png", image_bytes("png", 40, 40, seed=5), "image/png")
        assert main(["retry", out, "--list"]) == 0
        assert main(["retry", out, "--no-progress", "--timeout", "5"]) == 0
        m = manifest(out)
        assert m["failures"] == {"http_404": 1}  # not a transient reason: left alone
        assert m["sources"] == [{"type": "test"}] and m["totals"]["samples"] == 8
        assert open(os.path.join(out, "64", "00001.tar"), "rb").read() == untouched
        _, _, recorded = read_plan(out)
        assert recorded.client.read_timeout == 5  # the options given to retry are kept for the next one

        assert main(["retry", out, "--reason", "http_404", "--no-progress"]) == 0
        assert manifest(out)["failures"] == {} and manifest(out)["totals"]["samples"] == 9
        download_item_table(
            items,
            WriterConfig(out_dir=str(tmp_path / "clean"), shard_size=3, val_fraction=0.5),
            options(),
            progress=False,
        )
    assert shard_members(out) == shard_members(tmp_path / "clean")
    assert manifest(out)["splits"] == manifest(tmp_path / "clean")["splits"]


def test_retry_refuses_folders_it_cannot_redo(tmp_path, capsys):
    assert main(["retry", str(tmp_path)]) == 2
    assert "not built by a web source" in capsys.readouterr().err


def test_item_table_row_groups_are_shards(tmp_path):
    rows = [
        {"url": f"http://example.com/{i}", "caption": str(i), "license": None, "similarity": None, "page": None}
        for i in range(10)
    ]
    path = write_items(tmp_path / "t.parquet", rows, shard_size=4)
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == [4, 4, 2]
    assert [r["caption"] for r in read_rows(path, 3, 9)] == [str(i) for i in range(3, 9)]
    assert not glob.glob(str(tmp_path / "*.tmp-*"))


def test_threads_fetch_concurrently(tmp_path, image_bytes):
    with LocalWebServer() as server:
        rows = [
            {
                "url": server.add("/slow%d.jpg" % i, Reply(200, image_bytes("jpg", seed=i), delay=0.5)),
                "caption": f"slow {i}",
                "license": None,
                "similarity": None,
                "page": None,
            }
            for i in range(16)
        ]
        items = write_items(tmp_path / "items.parquet", rows, shard_size=16)
        started = time.monotonic()
        _, man = download_item_table(
            items, WriterConfig(out_dir=str(tmp_path / "out"), shard_size=16), options(read_timeout=5), progress=False
        )
        elapsed = time.monotonic() - started
    assert man["totals"]["samples"] == 16
    assert elapsed < 5, f"16 half-second downloads on 8 threads took {elapsed:.1f}s (8 s if serial)"


def test_cli_options_share_per_domain_limits_between_processes():
    from data_pipeline.__main__ import build_parser
    from data_pipeline.download.cli import options_from_args

    args = build_parser().parse_args(
        [
            "laion",
            "x.parquet",
            "--out",
            "o",
            "--processes",
            "2",
            "--threads",
            "40",
            "--per-domain-rate",
            "10",
            "--per-domain-concurrency",
            "3",
            "--allow-network",
            "127.0.0.0/8",
            "--ignore-robots-tag",
        ]
    )
    opts = options_from_args(args, source="laion")
    assert opts.client.per_domain_rate == 5 and opts.client.per_domain_concurrency == 2
    assert opts.threads == 40 and opts.client.pool_maxsize >= 40 and opts.robots_directives == ()
    assert opts.client.address_policy.allows("127.0.0.1") and not opts.client.address_policy.allows("10.0.0.1")
    assert DownloadOptions.from_dict(opts.to_dict()) == opts  # what retry reads back from the plan
