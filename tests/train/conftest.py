"""Fixtures of the trainer tests: tiny synthetic datasets and a short from-scratch run shared by several tests."""
from __future__ import annotations

import pytest

from train_synthetic_shards import write_shards

FAST = dict(  # settings that keep test runs short
    batch_size=4, num_workers=0, val_samples=8, val_every=0, sample_every=-1, checkpoint_every=0,
    progress=False, log_every=1, shuffle_buffer=16)


def fast_config(**settings):
    """A validated TrainConfig with the FAST settings, overridden by `settings`."""
    from finetune.train import build_config

    return build_config({**FAST, **settings})


@pytest.fixture(scope="session")
def shards32(tmp_path_factory):
    """48 samples of 32px coloured shapes in 6 shards, every 5th in the val split."""
    return write_shards(tmp_path_factory.mktemp("shards32"), n=48, size=32, per_shard=8)


@pytest.fixture(scope="session")
def shards64(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards64"), n=16, size=64, per_shard=8, seed=1)


@pytest.fixture(scope="session")
def clip16():
    from finetune.tokenizers import get_tokenizer

    return get_tokenizer("clip", 16)
