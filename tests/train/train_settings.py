"""Trainer settings shared by the trainer tests (a module with a unique name: test dirs have no __init__.py)."""

from __future__ import annotations

FAST = dict(  # settings that keep test runs short
    batch_size=4,
    num_workers=0,
    val_samples=8,
    val_every=0,
    sample_every=-1,
    checkpoint_every=0,
    progress=False,
    log_every=1,
    shuffle_buffer=16,
)


def fast_config(**settings):
    """A validated TrainConfig with the FAST settings, overridden by `settings`."""
    from finetune.train import build_config

    return build_config({**FAST, **settings})
