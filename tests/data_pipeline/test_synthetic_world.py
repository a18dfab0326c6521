"""The synthetic world: vocabulary checks, seeded determinism, rendering, caption variety."""

from __future__ import annotations

import re

import numpy as np
import pytest

from data_pipeline.images import resize_square
from data_pipeline.synthetic import (
    DEFAULT_WORLD,
    PALETTE,
    SHAPE_NAMES,
    World,
    canonical_caption,
    make_scene,
    make_world,
    render,
    sample_attributes,
    sample_rng,
)
from data_pipeline.synthetic.captions import POSITION_PHRASES, POSITION_SHORT
from data_pipeline.synthetic.world import colors_compatible


def test_same_seed_and_index_give_the_same_sample_whatever_the_order():
    forward = [make_scene(i, seed=5, size=32, style="comic") for i in range(20)]
    backward = [make_scene(i, seed=5, size=32, style="comic") for i in reversed(range(20))][::-1]
    for (img_a, cap_a, attr_a), (img_b, cap_b, attr_b) in zip(forward, backward):
        assert np.array_equal(img_a, img_b)
        assert cap_a == cap_b and attr_a == attr_b
    other = [make_scene(i, seed=6, size=32, style="comic") for i in range(20)]
    assert sum(a[2] != b[2] for a, b in zip(forward, other)) >= 15


def test_scenes_respect_the_world_and_never_blend_shape_into_background():
    world = make_world(
        shapes=2, colors="red,blue,gray", backgrounds="white,blue", positions="center,top_left", sizes="large"
    )
    assert world.shapes == ("circle", "square") and world.sizes == ("large",)
    seen = set()
    for i in range(300):
        a = sample_attributes(world, sample_rng(1, i))
        assert a["shape"] in world.shapes and a["position"] in world.positions and a["size"] == "large"
        assert a["color"] != a["background"]
        assert (a["color"], a["background"]) != ("gray", "white")  # gray would blend with white's halftone dots
        assert 0 < a["x"] - a["diameter"] / 2 and a["x"] + a["diameter"] / 2 < 1
        seen.add((a["color"], a["background"]))
    assert seen == {("red", "white"), ("red", "blue"), ("blue", "white"), ("gray", "blue")}
    assert not colors_compatible("gray", "white") and colors_compatible("gray", "blue")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shapes="circle,hexagon"), "unknown shapes: hexagon"),
        (dict(colors="red,red"), "repeated colors"),
        (dict(shapes=99), "number of shapes must be between 1 and 7"),
        (dict(colors="white", backgrounds="white"), "no shape colour may stand on any background"),
        (dict(position_jitter=0.5), "position_jitter"),
    ],
)
def test_bad_worlds_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_world(**kwargs)


def test_world_round_trips_through_a_dict():
    world = make_world(shapes="star,heart", colors=3, backgrounds=2, size_jitter=0.0)
    assert World.from_dict(world.to_dict()) == world
    assert World.from_dict(DEFAULT_WORLD.to_dict()) == DEFAULT_WORLD


def test_render_draws_the_named_colours_and_looks_alike_at_every_size():
    attrs = {
        "shape": "square",
        "color": "red",
        "background": "blue",
        "style": "plain",
        "x": 0.5,
        "y": 0.5,
        "diameter": 0.46,
        "size": "large",
        "position": "center",
    }
    img = render(attrs, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[32, 32]) == PALETTE["red"] and tuple(img[2, 2]) == PALETTE["blue"]
    for style in ("plain", "comic"):
        a = dict(attrs, style=style, shape="star")
        small = render(a, 32).astype(np.float32)
        shrunk = resize_square(render(a, 256), 32).astype(np.float32)
        assert np.abs(small - shrunk).mean() < 6.0
    comic = render(dict(attrs, style="comic"), 64)
    assert comic.min() < 30  # black outline
    assert len(np.unique(comic[:8].reshape(-1, 3), axis=0)) > 2  # halftone dots on the background
    with pytest.raises(ValueError, match="style"):
        render(dict(attrs, style="watercolour"), 32)


def _position_phrase(caption: str, position: str) -> bool:
    return any(p in caption for p in POSITION_PHRASES[position] + POSITION_SHORT[position])


def test_captions_name_every_attribute_in_varied_phrasings():
    world = make_world(shapes=len(SHAPE_NAMES), sizes=3)
    captions, skeletons = [], set()
    for i in range(300):
        _, caps, a = make_scene(i, seed=2, world=world, size=32, style="plain", captions_per_image=3)
        assert len(caps) == 3 and len(set(caps)) == 3
        for cap in caps:
            assert a["shape"] in cap and a["color"] in cap and f"{a['background']}" in cap
            assert _position_phrase(cap, a["position"]), cap
            assert "comic" not in cap
            skeleton = cap
            for word in (
                a["shape"],
                a["color"],
                a["background"],
                "small",
                "little",
                "medium-sized",
                "medium",
                "large",
                "big",
            ):
                skeleton = re.sub(rf"\b{re.escape(word)}\b", "_", skeleton)
            skeletons.add(skeleton)
        captions.extend(caps)
    assert len(set(captions)) > 700
    assert len(skeletons) >= 40  # templates x position phrasings


def test_comic_captions_name_the_style_at_the_requested_rate():
    always = [make_scene(i, seed=3, size=32, style="comic", style_word_p=1.0)[1] for i in range(40)]
    never = [make_scene(i, seed=3, size=32, style="comic", style_word_p=0.0)[1] for i in range(40)]
    assert all("comic" in c for caps in always for c in caps)
    assert not any("comic" in c for caps in never for c in caps)


def test_canonical_caption():
    a = {"shape": "circle", "color": "red", "size": "small", "position": "top_left", "background": "orange"}
    assert canonical_caption(a) == "a small red circle in the top left on an orange background"
    assert canonical_caption(a, name_size=False) == "a red circle in the top left on an orange background"
