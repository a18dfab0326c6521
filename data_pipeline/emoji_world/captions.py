"""Captions for emoji scenes in varied phrasings: every caption names each emoji, where it is, the background
colour, and the size when the world has more than one (the shapes world's position and size words)."""

from __future__ import annotations

import numpy as np

from data_pipeline.synthetic.captions import COMIC_TEMPLATES, POSITION_PHRASES, POSITION_SHORT, SIZE_WORDS

SINGLE_TEMPLATES = (
    "{a_obj} {pos} on {a_bg} background",
    "{bg} background, {obj} at {short}",
    "{a_obj} {pos}, {bg} background",
    "{pos}, {a_obj} on {bg}",
    "{a_bg} background with {a_obj} {pos}",
    "there is {a_obj} {pos} against {a_bg} background",
)
ROW_TEMPLATES = (
    "{a_first} next to {a_second} {row} on {a_bg} background",
    "{a_first} on the left and {a_second} on the right, {row}, {bg} background",
    "{a_bg} background with {a_first} beside {a_second} {row}",
)
COLUMN_TEMPLATES = (
    "{a_first} above {a_second} on the {side}, {bg} background",
    "{a_second} below {a_first} on the {side} on {a_bg} background",
)
DIAGONAL_TEMPLATES = (
    "{a_first} {pos1} and {a_second} {pos2} on {a_bg} background",
    "{bg} background, {first} at {short1}, {second} at {short2}",
)
ROW_WORDS = {"top": ("at the top", "along the top"), "bottom": ("at the bottom", "along the bottom")}


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _choice(options, rng: np.random.Generator):
    # rng.random() is several times cheaper than rng.integers(), and captions draw a dozen choices per scene.
    return options[int(rng.random() * len(options))]


def _object(subject: dict, rng: np.random.Generator | None, name_size: bool) -> str:
    if not name_size:
        return subject["emoji"]
    size = _choice(SIZE_WORDS[subject["size"]], rng) if rng is not None else subject["size"]
    return f"{size} {subject['emoji']}"


def _pair_caption(first: dict, second: dict, bg: str, rng: np.random.Generator, name_size: bool) -> str:
    """Two emoji: in one row (first on the left), one column (first on top), or diagonal (first on top)."""
    (row1, col1), (row2, col2) = (s["position"].split("_") for s in (first, second))
    if (row1 == row2 and col1 == "right") or (col1 == col2 and row1 == "bottom") or (row1 != row2 and row1 == "bottom"):
        first, second = second, first
    a, b = _object(first, rng, name_size), _object(second, rng, name_size)
    words = {"first": a, "second": b, "a_first": _article(a), "a_second": _article(b), "bg": bg, "a_bg": _article(bg)}
    if row1 == row2:
        return _choice(ROW_TEMPLATES, rng).format(row=_choice(ROW_WORDS[row1], rng), **words)
    if col1 == col2:
        return _choice(COLUMN_TEMPLATES, rng).format(side=col1, **words)
    p1, p2 = first["position"], second["position"]
    return _choice(DIAGONAL_TEMPLATES, rng).format(
        pos1=_choice(POSITION_PHRASES[p1], rng),
        pos2=_choice(POSITION_PHRASES[p2], rng),
        short1=_choice(POSITION_SHORT[p1], rng),
        short2=_choice(POSITION_SHORT[p2], rng),
        **words,
    )


def make_emoji_caption(
    attributes: dict, rng: np.random.Generator, name_size: bool = True, style_word_p: float = 0.5
) -> str:
    """One caption for the scene, its phrasing drawn from `rng`."""
    subjects, bg = attributes["subjects"], attributes["background"]
    if len(subjects) == 2:
        caption = _pair_caption(subjects[0], subjects[1], bg, rng, name_size)
    else:
        (subject,) = subjects
        obj = _object(subject, rng, name_size)
        caption = _choice(SINGLE_TEMPLATES, rng).format(
            obj=obj,
            a_obj=_article(obj),
            bg=bg,
            a_bg=_article(bg),
            pos=_choice(POSITION_PHRASES[subject["position"]], rng),
            short=_choice(POSITION_SHORT[subject["position"]], rng),
        )
    if attributes.get("style") == "comic" and rng.random() < style_word_p:
        caption = _choice(COMIC_TEMPLATES, rng).format(caption=caption)
    return caption


def canonical_emoji_caption(attributes: dict, name_size: bool = True) -> str:
    """The one plain phrasing of a scene, for evaluation prompts: "a small sailboat in the top left on a cyan
    background", "a cat in the top left and a robot in the bottom right on a pink background"."""
    subjects, bg = attributes["subjects"], attributes["background"]
    parts = [f"{_article(_object(s, None, name_size))} {POSITION_PHRASES[s['position']][0]}" for s in subjects]
    return f"{' and '.join(parts)} on {_article(bg)} background"
