"""Whole samples of the emoji world: image, captions and ground truth from (seed, index)."""

from __future__ import annotations

from data_pipeline.synthetic.world import sample_rng

from .captions import make_emoji_caption
from .render import render_emoji_scene
from .world import DEFAULT_EMOJI_WORLD, EmojiWorld, sample_emoji_attributes


def make_emoji_scene(
    index: int,
    seed: int = 0,
    world: EmojiWorld = DEFAULT_EMOJI_WORLD,
    style: str = "plain",
    size: int = 64,
    captions_per_image: int = 3,
    style_word_p: float = 0.5,
):
    """Scene `index` of the run seeded `seed`: (RGB uint8 image, captions, attributes); the same arguments always
    give the same sample."""
    if captions_per_image < 1:
        raise ValueError("captions_per_image must be >= 1")
    rng = sample_rng(seed, index)
    attributes = sample_emoji_attributes(world, rng, style)
    name_size = world.names_size(len(attributes["subjects"]))
    captions: list[str] = []
    for _ in range(8 * captions_per_image):
        caption = make_emoji_caption(attributes, rng, name_size=name_size, style_word_p=style_word_p)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == captions_per_image:
            break
    return render_emoji_scene(attributes, size), captions, attributes
