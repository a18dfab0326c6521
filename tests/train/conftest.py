"""Fixtures of the trainer tests: tiny synthetic datasets and a short from-scratch run shared by several tests."""

from __future__ import annotations

import pytest
from train_synthetic_shards import write_shards


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
