"""Trainer data path: shard/imagefolder discovery, deterministic resumable streams, crops, captions, masks."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest
import torch
from train_synthetic_shards import write_imagefolder, write_shards

from finetune.train.augment import SampleMaker
from finetune.train.dataset_discovery import DatasetError, precheck, resolve_dataset
from finetune.train.masks import random_mask
from finetune.train.stream import (
    PositionTracker,
    StreamLayout,
    TrainStream,
    collate,
    decode_rgb,
    find_records,
    make_loader,
)


def _stream(dataset, tok, layout, start=None, offset=0, batch=4, **maker):
    return TrainStream(
        dataset.shards,
        SampleMaker(32, **maker),
        tok,
        batch,
        8,
        seed=3,
        layout=layout,
        start=start or {},
        worker_offset=offset,
    )


def _keys(batches):
    return [k for b in batches for k in b["keys"]]


def test_resolve_picks_model_size_or_larger(tmp_path, shards32):
    write_shards(tmp_path, n=4, size=64, per_shard=4)
    write_shards(tmp_path, n=4, size=128, per_shard=4)
    assert resolve_dataset([str(tmp_path)], 64).size_folder == 64
    assert resolve_dataset([str(tmp_path)], 32).size_folder == 64  # smallest larger one, downscaled by the crop
    with pytest.raises(DatasetError, match="wrong size"):
        resolve_dataset([str(tmp_path)], 256)
    ds = resolve_dataset([str(shards32 / "32" / "0000{0..2}.tar")], 32)
    assert len(ds.shards) == 3
    assert resolve_dataset([str(shards32 / "32" / "*.tar")], 32).kind == "webdataset"
    assert resolve_dataset([str(shards32)], 32).manifest_sha256


def test_records_carry_captions_split_and_image_bytes(shards32):
    ds = resolve_dataset([str(shards32)], 32)
    recs = list(ds.shards[0].records())
    assert len(recs) == 8
    assert recs[0].captions[0].startswith("a ") and len(recs[0].captions) == 2
    assert {r.split for r in recs} == {"train", "val"}
    rgb = decode_rgb(recs[0].read_bytes())
    assert rgb.shape == (32, 32, 3)


def test_stream_splits_processes_disjointly_and_skips_val(shards32, clip16):
    ds = resolve_dataset([str(shards32)], 32)
    train_keys = {r.key for s in ds.shards for r in s.records() if r.split == "train"}
    per_rank = []
    for rank in (0, 1):
        it = iter(_stream(ds, clip16, StreamLayout(2, rank, 1), batch=2))
        batches = list(itertools.islice(it, 9))  # 18 samples = one epoch of this rank's 3 shards... minus val
        per_rank.append(batches)
    k0, k1 = set(_keys(per_rank[0])), set(_keys(per_rank[1]))
    assert not (k0 & k1)
    assert (k0 | k1) <= train_keys
    assert len(k0 | k1) >= 30  # nearly the whole train split after ~one epoch each
    assert all(b["epoch"] in (0, 1) for b in per_rank[0])


def test_stream_is_deterministic_and_resumes_mid_epoch(shards32, clip16):
    ds = resolve_dataset([str(shards32)], 32)
    layout = StreamLayout(1, 0, 1)
    full = list(itertools.islice(iter(_stream(ds, clip16, layout)), 14))  # crosses an epoch boundary
    again = list(itertools.islice(iter(_stream(ds, clip16, layout)), 14))
    assert _keys(full) == _keys(again)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(full, again))
    tracker = PositionTracker(layout)
    for b in full[:11]:
        tracker.update(b)
    resumed = list(itertools.islice(iter(_stream(ds, clip16, layout, start=tracker.places)), 3))
    for a, b in zip(full[11:], resumed):
        assert a["keys"] == b["keys"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["tokens"], b["tokens"])
    # epochs differ in order
    assert _keys(full[:9]) != _keys(full[9:14]) + _keys(full[:4])


def test_resume_with_dataloader_workers_continues_in_order(shards32, clip16):
    ds = resolve_dataset([str(shards32)], 32)
    layout = StreamLayout(1, 0, 2)
    loader = make_loader(_stream(ds, clip16, layout, batch=3), 2)
    full = list(itertools.islice(iter(loader), 9))
    tracker = PositionTracker(layout)
    for b in full[:5]:
        tracker.update(b)
    state = json.loads(json.dumps(tracker.state()))  # as saved in a checkpoint
    restored, note = PositionTracker.from_state(state, layout)
    assert note is None
    loader2 = make_loader(
        _stream(ds, clip16, layout, start=restored.places, offset=restored.loader_offset(), batch=3), 2
    )
    resumed = list(itertools.islice(iter(loader2), 4))
    assert [b["keys"] for b in resumed] == [b["keys"] for b in full[5:9]]
    assert {b["stream"] for b in full} == {0, 1}


def test_random_crop_is_square_never_squashed():
    ramp = np.tile(np.arange(96, dtype=np.uint8)[None, :, None], (48, 1, 3))  # pixel value = x coordinate
    maker = SampleMaker(48, crop_scale=(1.0, 1.0))
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = maker.random_crop(ramp, rng)
        assert out.shape == (48, 48, 3)
        row = out[0, :, 0].astype(int)
        assert np.all(np.diff(row) == 1)  # consecutive x values: cropped, not resized sideways
    small = SampleMaker(32, crop_scale=(0.5, 0.5)).random_crop(ramp, rng)
    assert small.shape == (32, 32, 3)
    assert np.all(np.diff(small[0, :, 0].astype(int)) >= 0)


def test_captions_uncond_p_and_empty_caption_tokens(clip16):
    maker = SampleMaker(32, uncond_p=0.2)
    rgb = np.zeros((32, 32, 3), np.uint8)
    rng = np.random.default_rng(1)
    samples = [maker.train_sample(rgb, ("first", "second"), rng) for _ in range(600)]
    uncond = np.mean([s["uncond"] for s in samples])
    assert 0.15 < uncond < 0.25
    assert {s["caption"] for s in samples} == {"first", "second"}
    for s in samples[:8]:
        s["key"] = "k"
    batch = collate(samples[:8], clip16)
    empty_tokens, empty_mask = clip16.empty(1)
    for row in range(8):
        if batch["uncond"][row]:
            assert torch.equal(batch["tokens"][row], empty_tokens[0]) and not batch["mask"][row].any()
        else:
            assert batch["mask"][row].any()
    assert SampleMaker(32, uncond_p=0.0).train_sample(rgb, ("x",), rng)["uncond"] is False


def test_a_kept_caption_is_never_dropped_and_the_rng_stream_does_not_change():
    maker = SampleMaker(32, uncond_p=0.9)
    rgb = np.zeros((32, 32, 3), np.uint8)
    kept = [maker.train_sample(rgb, ("zorp",), np.random.default_rng(i), keep_caption=True) for i in range(50)]
    assert not any(s["uncond"] for s in kept)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    maker.train_sample(rgb, ("x",), a, keep_caption=True)
    maker.train_sample(rgb, ("x",), b)
    assert a.random() == b.random()


def test_records_read_the_caption_dropout_attribute():
    from finetune.train.dataset_discovery import keeps_caption

    assert keeps_caption({"attributes": {"caption_dropout": "off"}})
    assert keeps_caption({"attributes": {"caption_dropout": "OFF"}})
    assert not keeps_caption({"attributes": {"caption_dropout": "on"}})
    assert not keeps_caption({"attributes": None}) and not keeps_caption({})


def test_records_read_the_prior_preservation_attribute():
    from finetune.train.dataset_discovery import is_prior_image

    assert is_prior_image({"attributes": {"prior_preservation": "on"}})
    assert not is_prior_image({"attributes": {"prior_preservation": "off"}})
    assert not is_prior_image({"attributes": "on"}) and not is_prior_image({})


def test_flip_is_off_by_default_and_works_when_asked():
    rgb = np.tile(np.arange(32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    rng = np.random.default_rng(0)
    plain = [SampleMaker(32, crop_scale=(1, 1)).train_sample(rgb, ("c",), rng)["image"] for _ in range(20)]
    assert all(np.all(np.diff(p[0, 0]) > 0) for p in plain)
    flipped = [SampleMaker(32, crop_scale=(1, 1), flip_p=1.0).train_sample(rgb, ("c",), rng)["image"] for _ in range(3)]
    assert all(np.all(np.diff(p[0, 0]) < 0) for p in flipped)


def test_upsampler_low_res_is_antialiased_and_augmentable():
    rng = np.random.default_rng(0)
    checker = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    maker = SampleMaker(64, lowres_size=16, crop_scale=(1, 1))
    lr = maker.train_sample(checker, ("c",), rng)["low_res"]
    assert lr.shape == (3, 16, 16)
    assert np.allclose(lr, 0.0, atol=0.02)  # a 1px checkerboard averages to grey instead of aliasing
    expected = cv2.resize(checker, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1
    assert np.allclose(lr, expected.transpose(2, 0, 1))
    aug = SampleMaker(64, lowres_size=16, crop_scale=(1, 1), lowres_noise_p=1.0, lowres_noise_std=0.2)
    noisy = aug.train_sample(checker, ("c",), rng)["low_res"]
    assert not np.allclose(noisy, lr) and noisy.min() >= -1 and noisy.max() <= 1


@pytest.mark.parametrize("kind", ["rect", "strokes", "mixed"])
def test_inpaint_masks_erase_part_of_the_image(kind):
    rng = np.random.default_rng(5)
    fractions = []
    for _ in range(20):
        m = random_mask(32, rng, kind)
        assert m.shape == (32, 32) and m.dtype == np.float32
        assert set(np.unique(m)) <= {0.0, 1.0}
        fractions.append(1 - m.mean())
    assert 0.0 < min(fractions) and max(fractions) < 1.0
    assert np.std(fractions) > 0.01  # masks vary


def test_inpaint_and_val_samples_are_deterministic(shards32):
    ds = resolve_dataset([str(shards32)], 32)
    maker = SampleMaker(32, inpaint=True)
    recs = find_records(ds, "val", 4)
    assert len(recs) == 4 and all(r.split == "val" for r in recs)
    from finetune.train.stream import val_samples

    a, b = val_samples(recs, maker, 0), val_samples(recs, maker, 0)
    assert all(np.array_equal(x["inpaint_mask"], y["inpaint_mask"]) for x, y in zip(a, b))
    assert all(x["caption"] == r.captions[0] for x, r in zip(a, recs))


def test_imagefolder_input(tmp_path, clip16):
    folder = write_imagefolder(tmp_path / "folder", n=12, size=40, width=56)
    ds = resolve_dataset([str(folder)], 32)
    assert ds.kind == "imagefolder"
    precheck(ds, 32, decode_rgb)
    batches = list(itertools.islice(iter(_stream(ds, clip16, StreamLayout(1, 0, 1), batch=3)), 3))
    assert batches[0]["image"].shape == (3, 3, 32, 32)
    val = find_records(ds, "val", 10)
    assert len(val) == 3
    assert not set(_keys(batches)) & {r.key for r in val}


def test_dataset_errors_are_clear(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no .tar shards"):
        resolve_dataset([str(empty)], 32)
    with pytest.raises(DatasetError, match="shard not found"):
        resolve_dataset([str(tmp_path / "nope.tar")], 32)
    with pytest.raises(DatasetError, match="no shards match"):
        resolve_dataset([str(tmp_path / "*.tar")], 32)
    nocap = write_shards(tmp_path / "nocap", n=4, size=32, per_shard=4, captions=False)
    with pytest.raises(DatasetError, match="without captions"):
        precheck(resolve_dataset([str(nocap)], 32), 32, decode_rgb)
    small = write_shards(tmp_path / "small", n=4, size=16, per_shard=4)
    with pytest.raises(DatasetError, match="wrong size"):
        resolve_dataset([str(small)], 32)
    with pytest.raises(DatasetError, match="wrong size"):
        precheck(resolve_dataset([str(small / "16")], 32), 32, decode_rgb)
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "00000.tar").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty"):
        precheck(resolve_dataset([str(tmp_path / "zero")], 32), 32, decode_rgb)
    bad_folder = tmp_path / "badfolder"
    bad_folder.mkdir()
    (bad_folder / "metadata.jsonl").write_text(json.dumps({"file_name": "../escape.png", "text": "x"}) + "\n")
    with pytest.raises(DatasetError, match="outside the folder"):
        resolve_dataset([str(bad_folder)], 32)


def test_val_search_skips_shards_whose_stats_have_no_val(tmp_path):
    root = write_shards(tmp_path / "ds", n=20, size=32, per_shard=10, val_every=5)
    (root / "32" / "00000_stats.json").write_text(json.dumps({"splits": {"train": 10, "val": 0}}))
    ds = resolve_dataset([str(root)], 32)
    assert [s.split_count("val") for s in ds.shards] == [0, None]
    found = find_records(ds, "val", 10)
    assert [r.key for r in found] == ["000014", "000019"]  # shard 0's val samples were not read
