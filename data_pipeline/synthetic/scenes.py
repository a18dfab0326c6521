"""Whole samples of the synthetic world: image, captions and ground truth from (seed, index)."""

from __future__ import annotations

from .captions import make_caption
from .render import canvas_dims, render
from .world import DEFAULT_WORLD, World, sample_attributes, sample_rng


def make_scene(
    index: int,
    seed: int = 0,
    world: World = DEFAULT_WORLD,
    style: str = "plain",
    size: int | tuple[int, int] = 64,
    captions_per_image: int = 3,
    style_word_p: float = 0.5,
):
    """Scene `index` of the run seeded `seed`: (RGB uint8 image, captions, attributes). `size` is a side, or
    (height, width) for a non-square canvas (positions are then relative to that canvas).

    The same arguments always give the same sample, whatever else was generated before.
    """
    if captions_per_image < 1:
        raise ValueError("captions_per_image must be >= 1")
    height, width = canvas_dims(size)
    rng = sample_rng(seed, index)
    attributes = sample_attributes(world, rng, style, aspect=width / height)
    name_size = len(world.sizes) > 1
    captions = []
    # Distinct phrasings where the templates allow; a few draws suffice.
    for _ in range(8 * captions_per_image):
        caption = make_caption(attributes, rng, name_size=name_size, style_word_p=style_word_p)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == captions_per_image:
            break
    return render(attributes, size), captions, attributes
