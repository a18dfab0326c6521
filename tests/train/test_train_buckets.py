"""Aspect-ratio buckets: batches of one shape each, buckets mixed by their sample counts, exact resume."""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
from train_settings import fast_config

from data_pipeline.runner import build_dataset
from data_pipeline.shards import WriterConfig, plan_shards
from data_pipeline.sources.synthetic import produce_synthetic
from data_pipeline.synthetic import DEFAULT_WORLD
from finetune.train import build_config, read_metrics, train
from finetune.train.augment import SampleMaker
from finetune.train.buckets import BucketLoader, bucket_tracker, open_bucket_loader, resolve_buckets
from finetune.train.dataset_discovery import DatasetError
from finetune.train.resume_state import list_checkpoints
from finetune.train.stream import PositionTracker, StreamLayout, decode_rgb

WIDE_FIRST_SHARD = 10  # the wide dataset's keys start at shard 10, so a key says which dataset it came from


def _synthetic(out, count, sizes, canvas, first_shard=0):
    config = WriterConfig(out, sizes=sizes, shard_size=8, image_format="png", val_fraction=0.2)
    produce = functools.partial(
        produce_synthetic, world=DEFAULT_WORLD.to_dict(), seed=3, style="plain", size=canvas,
        captions_per_image=2, style_word_p=0.0,
    )  # fmt: skip
    build_dataset(plan_shards(range(count), 8, first_shard), produce, config, progress=False)
    return out


@pytest.fixture(scope="module")
def bucket_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("buckets")
    square = _synthetic(root / "square", 32, (32,), 32)
    wide = _synthetic(root / "wide", 16, ("64x32",), (32, 64), WIDE_FIRST_SHARD)
    return [str(square), str(wide)]


def _loader(data, clip16, start: BucketLoader | None = None, tracker=None):
    dataset = resolve_buckets(data, "32,64x32", decode_rgb)
    config = fast_config(run_dir="unused", data=data, preset="tiny-base", shuffle_buffer=4, seed=5)
    tracker = tracker or bucket_tracker(PositionTracker(StreamLayout()), dataset.buckets)
    return dataset, tracker, open_bucket_loader(dataset.buckets, tracker, SampleMaker(32), clip16, config, False)


def test_buckets_give_batches_of_one_shape_in_proportion_and_replay_from_a_position(bucket_data, clip16):
    dataset, tracker, loader = _loader(bucket_data, clip16)
    assert [(b.name, b.height, b.width) for b in dataset.buckets] == [("32", 32, 32), ("64x32", 32, 64)]
    counts = [b.train_samples for b in dataset.buckets]
    assert counts[0] > counts[1] > 0  # the square set holds twice the samples
    seen = []
    batches = iter(loader)
    for _ in range(12):
        batch = next(batches)
        tracker.update(batch)
        seen.append((batch["bucket"], tuple(batch["image"].shape), tuple(batch["keys"])))
    shapes = {shape for _, shape, _ in seen}
    assert shapes == {(4, 3, 32, 32), (4, 3, 32, 64)}
    for bucket, shape, keys in seen:
        wide = bucket == "64x32"
        assert (shape[-1] == 64) == wide and all((int(k) >= WIDE_FIRST_SHARD * 10**4) == wide for k in keys)
    # a loader opened at the position after 5 batches continues with batch 6 exactly
    _, _, first = _loader(bucket_data, clip16)
    replay_tracker = bucket_tracker(PositionTracker(StreamLayout()), dataset.buckets)
    head = iter(first)
    for _ in range(5):
        replay_tracker.update(next(head))
    saved = json.loads(json.dumps(replay_tracker.state()))
    restored, note = PositionTracker.from_state(saved, StreamLayout())
    assert note is None and restored.consumed == 5
    _, _, resumed = _loader(bucket_data, clip16, tracker=bucket_tracker(restored, dataset.buckets))
    rest = iter(resumed)
    assert [(b["bucket"], tuple(b["keys"])) for b in (next(rest) for _ in range(7))] == [
        (bucket, keys) for bucket, _, keys in seen[5:]
    ]


def _settings(run_dir, data):
    return dict(
        run_dir=str(run_dir), data=data, buckets="32,64x32", preset="tiny-base", max_steps=8, num_workers=2,
        shuffle_buffer=6, checkpoint_every=3, keep_checkpoints=5, lr=1e-3, val_samples=4, seed=11, threads=1,
        log_sample_keys=True,
    )  # fmt: skip


def _keys_by_step(run_dir) -> list[list[str]]:
    lines = (run_dir / "sample_keys-rank0.jsonl").read_text().splitlines()
    return [json.loads(line)["keys"] for line in lines]


def test_trains_with_buckets_and_resumes_exactly(tmp_path, bucket_data):
    straight_dir = tmp_path / "straight"
    straight = train(fast_config(**_settings(straight_dir, bucket_data)))
    assert straight.step == 8
    keys = _keys_by_step(straight_dir)
    wide = [all(int(k) >= WIDE_FIRST_SHARD * 10**4 for k in step) for step in keys]
    square = [all(int(k) < WIDE_FIRST_SHARD * 10**4 for k in step) for step in keys]
    assert any(wide) and any(square) and all(w or s for w, s in zip(wide, square))  # both shapes, never mixed

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(straight_dir, resumed_dir)
    for checkpoint in list_checkpoints(resumed_dir):
        if int(checkpoint.name.split("-")[1]) > 3:
            shutil.rmtree(checkpoint)
    resumed = train(build_config({"run_dir": str(resumed_dir), "resume": "latest", "progress": False}))
    assert resumed.step == 8
    a, b = read_metrics(straight_dir), read_metrics(resumed_dir)
    assert [m["step"] for m in b] == list(range(1, 9))
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-6), (x, y)
    assert _keys_by_step(resumed_dir) == keys


def test_bad_buckets_are_one_line_errors(tmp_path, bucket_data):
    with pytest.raises(DatasetError, match="WxH"):
        resolve_buckets(bucket_data, "32,64y32", decode_rgb)
    with pytest.raises(DatasetError, match="48x32"):
        resolve_buckets(bucket_data, "32,48x32", decode_rgb)
    with pytest.raises(DatasetError, match="none of the buckets"):
        resolve_buckets([bucket_data[1]], "32", decode_rgb)
    odd = str(_synthetic(tmp_path / "odd", 8, ("42x32",), (32, 42)))
    with pytest.raises(DatasetError, match="multiples of 4"):
        train(fast_config(**{**_settings(tmp_path / "run", [bucket_data[0], odd]), "buckets": "32,42x32"}))


def test_bucket_samples_have_the_buckets_shape_for_upsamplers_and_inpainting():
    rgb = np.random.default_rng(0).integers(0, 256, (48, 96, 3), dtype=np.uint8)
    maker = SampleMaker(64, lowres_size=16, inpaint=True, shape=(32, 64), crop_scale=(0.5, 1.0))
    for seed in range(5):
        sample = maker.train_sample(rgb, ("a wide picture",), np.random.default_rng(seed))
        assert sample["image"].shape == (3, 32, 64) and sample["low_res"].shape == (3, 8, 16)
        assert sample["inpaint_mask"].shape == (1, 32, 64) and 0 < sample["inpaint_mask"].mean() < 1
    assert maker.too_small(rgb[:, :60]) and not maker.too_small(rgb)
    tall = SampleMaker(32, shape=(64, 32))
    assert tall.too_small(rgb)  # 48 px high: too short for a 64 px tall bucket
    assert tall.random_crop(np.zeros((80, 50, 3), np.uint8), np.random.default_rng(1)).shape == (64, 32, 3)
