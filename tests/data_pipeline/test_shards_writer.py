"""The shard writer: layout, schema, failures by reason, split, ordering, retry, dedupe, readers."""

from __future__ import annotations

import glob
import json
import os
import tarfile

import numpy as np
import pytest

from data_pipeline import images
from data_pipeline.runner import build_dataset, run_shard_tasks
from data_pipeline.shards import (
    Failure,
    Sample,
    ShardTask,
    WriterConfig,
    assign_split,
    iter_tar_samples,
    make_key,
    plan_shards,
    shard_is_complete,
    write_shard,
)

SCHEMA = {
    "key",
    "caption",
    "captions",
    "source",
    "url",
    "width",
    "height",
    "similarity",
    "license",
    "attribution",
    "split",
    "attributes",
}


def produce_items(task: ShardTask, reverse: bool = False):
    """Items are dicts: {"fail": reason} or {"image": bytes|array, "caption": ..., ...Sample fields}."""
    records = []
    for index, item in enumerate(task.items):
        if item is None:
            continue  # the source forgot this item: counted as no_result
        if "fail" in item:
            records.append(Failure(index, item["fail"], "detail", url="http://example.invalid/x"))
        else:
            records.append(Sample(index=index, source="test", **item))
    yield from (reversed(records) if reverse else records)


def produce_reversed(task: ShardTask):
    return produce_items(task, reverse=True)


def good_items(image_bytes, n: int, start_seed: int = 0) -> list[dict]:
    return [
        {
            "image": image_bytes("jpg", 40 + i, 30 + 2 * i, seed=start_seed + i),
            "caption": f"picture {i}",
            "url": f"http://example.invalid/{i}.jpg",
            "similarity": 0.3,
        }
        for i in range(n)
    ]


def tar_bytes(out_dir) -> dict[str, bytes]:
    return {
        os.path.relpath(p, out_dir): open(p, "rb").read()
        for p in sorted(glob.glob(os.path.join(out_dir, "*", "*.tar")))
    }


def read_samples(out_dir, size) -> dict[str, dict]:
    samples = {}
    for path in sorted(glob.glob(os.path.join(out_dir, str(size), "*.tar"))):
        for key, files in iter_tar_samples(path):
            samples[key] = files
    return samples


def test_layout_keys_schema_and_manifest(tmp_path, image_bytes):
    items = good_items(image_bytes, 9)
    items[2] = {"fail": "http_404"}
    items[6] = None
    items[7]["captions"] = ["  picture 7 ", "another\tcaption\n7", ""]
    items[7]["license"], items[7]["attribution"] = "CC BY-SA 4.0", "Jane Doe"
    items[8]["attributes"] = {"shape": "circle"}
    config = WriterConfig(tmp_path / "ds", sizes=(32, 16), shard_size=4)
    summary, manifest = build_dataset(
        plan_shards(items, 4),
        produce_items,
        config,
        progress=False,
        sources=[{"type": "test"}],
        filters={"min_similarity": 0.2},
    )
    assert summary.ok and summary.shards_written == 3
    out = config.out_dir
    for size in (16, 32):
        assert sorted(os.listdir(os.path.join(out, str(size)))) == [
            "00000.tar",
            "00000_stats.json",
            "00001.tar",
            "00001_stats.json",
            "00002.tar",
            "00002_stats.json",
        ]
    small, large = read_samples(out, 16), read_samples(out, 32)
    expected_keys = [make_key(i // 4, i % 4, 4) for i in range(9) if i not in (2, 6)]
    assert list(small) == list(large) == expected_keys
    assert expected_keys[:2] == ["000000000", "000000001"] and "000010003" in expected_keys
    for key, files in large.items():
        assert set(files) == {"jpg", "txt", "json"}
        meta = json.loads(files["json"])
        assert set(meta) == SCHEMA
        assert files["txt"].decode() == meta["caption"]
        assert meta["key"] == key and meta["split"] == "train" and meta["source"] == "test"
        rgb, size = images.decode_image(files["jpg"])
        assert size == (32, 32)
        assert json.loads(small[key]["json"]) == meta
    meta7 = json.loads(large["000010003"]["json"])
    assert meta7["captions"] == ["picture 7", "another caption 7"]
    assert (meta7["width"], meta7["height"]) == (47, 44)  # original size, not the resized one
    assert (meta7["license"], meta7["attribution"]) == ("CC BY-SA 4.0", "Jane Doe")
    assert json.loads(large["000020000"]["json"])["attributes"] == {"shape": "circle"}

    assert manifest["totals"] == {"shards": 3, "expected_shards": 3, "items": 9, "samples": 7, "failed": 2}
    assert manifest["failures"] == {"http_404": 1, "no_result": 1}
    assert manifest["sizes"] == [16, 32] and manifest["filters"] == {"min_similarity": 0.2}
    assert manifest == json.load(open(os.path.join(out, "manifest.json")))
    stats = json.load(open(os.path.join(out, "16", "00000_stats.json")))
    assert stats["failed_items"] == [
        {"key": "000000002", "index": 2, "reason": "http_404", "detail": "detail", "url": "http://example.invalid/x"}
    ]
    assert not glob.glob(os.path.join(out, "*", "*.tmp-*"))


def test_bad_inputs_are_counted_by_reason(tmp_path, image_bytes):
    kinds = ["truncated", "corrupt", "html", "empty", "bomb"]
    items = [{"image": image_bytes(k), "caption": "x"} for k in kinds]
    items += [
        {"image": image_bytes("png"), "caption": "   \n"},
        {"image": image_bytes("png"), "caption": None, "captions": ["", "  fallback caption  "]},
        {"image": np.zeros((8, 8, 3), np.float32), "caption": "float array"},
        {"image": np.zeros((16, 16), np.uint8), "caption": "grey array"},
        {"image": image_bytes("png", 8, 8), "caption": "tiny"},
    ]
    items += [
        {"image": image_bytes(k), "caption": k}
        for k in ("cmyk", "gray16", "palette_alpha", "la", "animated_gif", "webp")
    ]
    config = WriterConfig(tmp_path / "ds", sizes=(16,), min_image_side=10)
    summary, manifest = build_dataset(plan_shards(items, 100), produce_items, config, progress=False)
    assert summary.ok
    assert manifest["failures"] == {
        "corrupt_image": 1,
        "decompression_bomb": 1,
        "empty_caption": 1,
        "empty_image": 1,
        "bad_image_array": 1,
        "image_too_small": 1,
        "not_an_image": 1,
        "truncated_image": 1,
    }
    captions = [json.loads(f["json"])["caption"] for f in read_samples(config.out_dir, 16).values()]
    assert captions == [
        "fallback caption",
        "grey array",
        "cmyk",
        "gray16",
        "palette_alpha",
        "la",
        "animated_gif",
        "webp",
    ]


def test_shards_load_in_webdataset(tmp_path, image_bytes):
    import webdataset as wds

    config = WriterConfig(tmp_path / "ds", sizes=(24,), shard_size=3, val_fraction=0.5)
    build_dataset(plan_shards(good_items(image_bytes, 7), 3), produce_items, config, progress=False)
    urls = sorted(glob.glob(os.path.join(config.out_dir, "24", "*.tar")))
    loaded = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("__key__", "jpg", "txt", "json"))
    assert [k for k, *_ in loaded] == [make_key(i // 3, i % 3, 3) for i in range(7)]
    for key, rgb, txt, meta in loaded:
        assert rgb.shape == (24, 24, 3) and rgb.dtype == np.uint8
        assert txt == meta["caption"] and meta["key"] == key


def test_shards_load_in_hf_datasets(tmp_path, image_bytes):
    import datasets

    config = WriterConfig(tmp_path / "ds", sizes=(24,), shard_size=3, image_format="png")
    build_dataset(plan_shards(good_items(image_bytes, 5), 3), produce_items, config, progress=False)
    files = sorted(glob.glob(os.path.join(config.out_dir, "24", "*.tar")))
    ds = datasets.load_dataset(
        "webdataset", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "hf_cache")
    )
    assert len(ds) == 5
    row = ds[3]
    assert row["png"].size == (24, 24)
    assert row["txt"] == "picture 3" and row["json"]["caption"] == "picture 3"
    assert row["__key__"] == make_key(1, 0, 3)


def test_split_is_stable_and_keeps_groups_together(tmp_path, image_bytes):
    items = good_items(image_bytes, 40)
    for i in range(0, 40, 4):  # groups of two samples (e.g. the same URL)
        items[i]["group"] = items[i + 1]["group"] = f"group-{i}"
    duplicate = image_bytes("png", seed=99)
    items[2] = {"image": duplicate, "caption": "copy one"}
    items[3] = {"image": duplicate, "caption": "copy two"}

    def splits(name):
        config = WriterConfig(tmp_path / name, sizes=(8,), shard_size=10, val_fraction=0.3)
        build_dataset(plan_shards(items, 10), produce_items, config, progress=False)
        return {k: json.loads(f["json"])["split"] for k, f in read_samples(config.out_dir, 8).items()}

    first, second = splits("a"), splits("b")
    assert first == second
    assert 4 <= list(first.values()).count("val") <= 24
    for i in range(0, 40, 4):
        assert first[make_key(i // 10, i % 10, 10)] == first[make_key((i + 1) // 10, (i + 1) % 10, 10)]
    assert first[make_key(0, 2, 10)] == first[make_key(0, 3, 10)]  # identical images, no group given
    assert assign_split("anything", 0.0) == "train" and assign_split("anything", 1.0) == "val"
    shares = [assign_split(f"g{i}", 0.2) for i in range(5000)]
    assert 0.17 < shares.count("val") / 5000 < 0.23


def test_out_of_order_records_and_process_pool_give_identical_shards(tmp_path, image_bytes):
    items = good_items(image_bytes, 9)
    items[4] = {"fail": "timeout"}
    tasks = plan_shards(items, 3)
    base = WriterConfig(tmp_path / "inline", sizes=(16, 24), shard_size=3, val_fraction=0.4)
    build_dataset(tasks, produce_items, base, progress=False)
    shuffled = WriterConfig(tmp_path / "reversed", sizes=(16, 24), shard_size=3, val_fraction=0.4)
    build_dataset(tasks, produce_reversed, shuffled, progress=False)
    pooled = WriterConfig(tmp_path / "pool", sizes=(16, 24), shard_size=3, val_fraction=0.4)
    summary, _ = build_dataset(tasks, produce_items, pooled, processes=2, progress=False)
    assert summary.ok and summary.samples == 8 and summary.failures == {"timeout": 1}
    reference = tar_bytes(base.out_dir)
    assert len(reference) == 6
    assert tar_bytes(shuffled.out_dir) == reference
    assert tar_bytes(pooled.out_dir) == reference
    with tarfile.open(os.path.join(shuffled.out_dir, "24", "00000.tar")) as tar:
        assert tar.getnames()[:3] == ["000000000.jpg", "000000000.txt", "000000000.json"]


class Exploding:
    """A source that dies at one item the first time round (like a crashed worker)."""

    def __init__(self, marker, explode_at):
        self.marker, self.explode_at = marker, explode_at

    def __call__(self, task):
        for record in produce_items(task):
            if (task.shard_id, record.index) == self.explode_at and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                raise ConnectionError("worker lost")
            yield record


def test_resume_after_failure_matches_uninterrupted_run(tmp_path, image_bytes):
    items = good_items(image_bytes, 10)
    items[1] = {"fail": "http_500"}
    tasks = plan_shards(items, 3)
    reference = WriterConfig(tmp_path / "ref", sizes=(16, 32), shard_size=3, val_fraction=0.3)
    _, ref_manifest = build_dataset(tasks, produce_items, reference, progress=False)

    config = WriterConfig(tmp_path / "ds", sizes=(16, 32), shard_size=3, val_fraction=0.3)
    source = Exploding(str(tmp_path / "exploded"), explode_at=(1, 2))
    summary, manifest = build_dataset(tasks, source, config, progress=False)
    assert not summary.ok and "shard 00001: ConnectionError: worker lost" in summary.errors[0]
    assert manifest["totals"]["shards"] == 3 and manifest["totals"]["expected_shards"] == 4
    assert not shard_is_complete(config, 1)
    assert not os.path.exists(os.path.join(config.out_dir, "16", "00001.tar"))
    assert not glob.glob(os.path.join(config.out_dir, "*", "*.tmp-*"))

    summary, manifest = build_dataset(tasks, source, config, progress=False)
    assert summary.ok and summary.shards_skipped == 3 and summary.shards_written == 1
    assert tar_bytes(config.out_dir) == tar_bytes(reference.out_dir)
    for m in (manifest, ref_manifest):
        m.pop("created")
    assert manifest == ref_manifest


def test_changed_settings_redo_complete_shards(tmp_path, image_bytes):
    tasks = plan_shards(good_items(image_bytes, 4), 2)
    crop = WriterConfig(tmp_path / "ds", sizes=(16,), shard_size=2)
    build_dataset(tasks, produce_items, crop, progress=False)
    again = run_shard_tasks(tasks, produce_items, crop, progress=False)
    assert again.shards_skipped == 2 and again.shards_written == 0
    pad = WriterConfig(tmp_path / "ds", sizes=(16,), shard_size=2, resize_mode="pad")
    redo = run_shard_tasks(tasks, produce_items, pad, progress=False)
    assert redo.shards_skipped == 0 and redo.shards_written == 2
    assert json.load(open(os.path.join(pad.out_dir, "16", "00000_stats.json")))["config"]["resize_mode"] == "pad"


def test_changed_inputs_redo_only_their_shard(tmp_path, image_bytes):
    items = good_items(image_bytes, 6)
    config = WriterConfig(tmp_path / "ds", sizes=(16,), shard_size=2)
    build_dataset(plan_shards(items, 2), produce_items, config, progress=False)
    items[3] = dict(items[3], caption="an edited caption")
    summary, _ = build_dataset(plan_shards(items, 2), produce_items, config, progress=False)
    assert summary.shards_skipped == 2 and summary.shards_written == 1
    assert json.loads(read_samples(config.out_dir, 16)[make_key(1, 1, 2)]["json"])["caption"] == "an edited caption"


def test_retry_merges_into_a_complete_shard(tmp_path, image_bytes):
    items = good_items(image_bytes, 6)
    flaky = {1: "http_503", 4: "timeout"}
    first = [dict(fail=flaky[i]) if i in flaky else it for i, it in enumerate(items)]
    config = WriterConfig(tmp_path / "ds", sizes=(16,), shard_size=6)
    build_dataset(plan_shards(first, 6), produce_items, config, progress=False)
    stats = json.load(open(os.path.join(config.out_dir, "16", "00000_stats.json")))
    assert [f["index"] for f in stats["failed_items"]] == [1, 4]

    def retry(task):  # only the items that failed with http_503 are fetched again
        for failed in stats["failed_items"]:
            if failed["reason"] == "http_503":
                yield Sample(index=failed["index"], source="test", **items[failed["index"]])

    merged = write_shard(ShardTask(0, items), retry, config, merge_existing=True)
    assert merged["successes"] == 5 and merged["failures"] == {"timeout": 1}
    keys = list(read_samples(config.out_dir, 16))
    assert keys == [make_key(0, i, 6) for i in (0, 1, 2, 3, 5)]

    full = WriterConfig(tmp_path / "full", sizes=(16,), shard_size=6)
    build_dataset(
        plan_shards([None if i == 4 else it for i, it in enumerate(items)], 6), produce_items, full, progress=False
    )
    assert read_samples(full.out_dir, 16) == read_samples(config.out_dir, 16)
    with pytest.raises(RuntimeError, match="not complete"):
        write_shard(ShardTask(1, items), retry, config, merge_existing=True)


def test_near_duplicates_removed_across_shards(tmp_path, image_bytes, make_pattern):
    picture = make_pattern(120, 90, seed=7)
    items = good_items(image_bytes, 6, start_seed=20)
    items[1] = {"image": images.encode_image(picture, "jpg", 95), "caption": "original"}
    half = np.ascontiguousarray(picture[::2, ::2])
    items[4] = {"image": images.encode_image(half, "jpg", 70), "caption": "smaller copy"}
    items[5] = {"image": images.encode_image(picture, "png"), "caption": "png copy"}
    config = WriterConfig(tmp_path / "ds", sizes=(16,), shard_size=3, dedupe_distance=8)
    summary, manifest = build_dataset(plan_shards(items, 3), produce_items, config, processes=2, progress=False)
    assert summary.ok and summary.samples == 6  # removal happens after all shards are written
    assert manifest["failures"] == {"near_duplicate": 2} and manifest["totals"]["samples"] == 4
    samples = read_samples(config.out_dir, 16)
    captions = {json.loads(f["json"])["caption"] for f in samples.values()}
    assert "original" in captions and not captions & {"smaller copy", "png copy"}
    stats = json.load(open(os.path.join(config.out_dir, "16", "00001_stats.json")))
    assert {f["detail"] for f in stats["failed_items"]} == {"near-duplicate of 000000001"}
    before = tar_bytes(config.out_dir)
    _, again = build_dataset(plan_shards(items, 3), produce_items, config, progress=False)
    assert tar_bytes(config.out_dir) == before and again["totals"] == manifest["totals"]


def test_rerun_removes_what_a_killed_run_left_half_written(tmp_path, image_bytes):
    config = WriterConfig(tmp_path / "ds", sizes=(16, 24), shard_size=2)
    leftovers = [
        os.path.join(config.out_dir, "16", "00000.tar.tmp-99999"),  # a streamed tar
        os.path.join(config.out_dir, "24", ".00000.tar.k3j2.tmp"),  # a reassembled tar (fsutil.atomic_write)
        os.path.join(config.out_dir, "16", ".00000_stats.json.x8f1.tmp"),  # a stats file
    ]
    other_shard = os.path.join(config.out_dir, "16", ".00001.tar.k3j2.tmp")
    for path in [*leftovers, other_shard]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
    write_shard(ShardTask(0, good_items(image_bytes, 2)), produce_items, config)
    assert [p for p in leftovers if os.path.exists(p)] == []
    assert os.path.exists(other_shard)  # another shard's writer may still be running
    assert shard_is_complete(config, 0)
