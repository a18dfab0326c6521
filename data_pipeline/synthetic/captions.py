"""Captions for synthetic scenes, in varied phrasings drawn from the scene's attributes.

Every caption names the shape, its colour, its position and the background colour (what the
evaluator scores), and the size when the world has more than one. Comic scenes name their
style in a share of captions (`style_word_p`), so a model learns the style both from the
words and as the look of a dataset it is fine-tuned on.
"""

from __future__ import annotations

import numpy as np

POSITION_PHRASES = {
    "center": ("in the center", "in the centre", "in the middle"),
    "top_left": ("in the top left", "in the top-left corner", "at the upper left"),
    "top_right": ("in the top right", "in the top-right corner", "at the upper right"),
    "bottom_left": ("in the bottom left", "in the bottom-left corner", "at the lower left"),
    "bottom_right": ("in the bottom right", "in the bottom-right corner", "at the lower right"),
}
POSITION_SHORT = {
    "center": ("center", "centre", "middle"),
    "top_left": ("top left", "top-left", "upper left"),
    "top_right": ("top right", "top-right", "upper right"),
    "bottom_left": ("bottom left", "bottom-left", "lower left"),
    "bottom_right": ("bottom right", "bottom-right", "lower right"),
}
SIZE_WORDS = {"small": ("small", "little"), "medium": ("medium", "medium-sized"), "large": ("large", "big")}

# {obj}: "[size ]colour shape" without article; {a_obj}: with its article.
TEMPLATES = (
    "{a_obj} {pos} on {a_bg} background",
    "{bg} background, {obj} at {short}",
    "{a_obj} {pos}, {bg} background",
    "{pos}, {a_obj} on {bg}",
    "{a_bg} background with {a_obj} {pos}",
    "there is {a_obj} {pos} against {a_bg} background",
    "{a_obj} against {bg}, {short}",
    "{obj}, {short}, on {bg}",
)
COMIC_TEMPLATES = (
    "{caption}, comic style",
    "comic-style drawing of {caption}",
    "{caption}, in a halftone comic style",
    "comic book panel: {caption}",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_caption(
    attributes: dict,
    rng: np.random.Generator,
    name_size: bool = True,
    style_word_p: float = 0.5,
) -> str:
    """One caption for the scene, its phrasing drawn from `rng`."""
    words = [attributes["color"], attributes["shape"]]
    if name_size:
        choices = SIZE_WORDS[attributes["size"]]
        words.insert(0, choices[rng.integers(len(choices))])
    obj = " ".join(words)
    bg = attributes["background"]
    pos_choices = POSITION_PHRASES[attributes["position"]]
    short_choices = POSITION_SHORT[attributes["position"]]
    pos = pos_choices[rng.integers(len(pos_choices))]
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    caption = template.format(
        obj=obj,
        a_obj=f"{_article(obj)} {obj}",
        bg=bg,
        a_bg=f"{_article(bg)} {bg}",
        pos=pos,
        short=short_choices[rng.integers(len(short_choices))],
    )
    if attributes.get("style") == "comic" and rng.random() < style_word_p:
        caption = COMIC_TEMPLATES[rng.integers(len(COMIC_TEMPLATES))].format(caption=caption)
    return caption


def canonical_caption(attributes: dict, name_size: bool = True) -> str:
    """The one plain phrasing of a scene, e.g. for evaluation prompts:
    "a small red circle in the top left on a blue background"."""
    words = ([attributes["size"]] if name_size else []) + [attributes["color"], attributes["shape"]]
    obj = " ".join(words)
    bg = attributes["background"]
    return f"{_article(obj)} {obj} {POSITION_PHRASES[attributes['position']][0]} on {_article(bg)} {bg} background"
