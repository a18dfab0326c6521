"""`openmoji --out DIR`: OpenMoji's emoji, each rendered on a plain background and captioned from its CLDR name.

Every sample is one emoji's design square at the requested sizes, captioned with its name and keywords in varied
phrasings (drawn from --seed and the emoji, so a rerun gives the same dataset), and carries OpenMoji's licence
(CC BY-SA 4.0) and required credit line in `license` and `attribution`: a dataset built from it, and a model
trained on that dataset, carry that licence. Filters pick emoji by group, subgroup or words of the name and
keywords; skin-tone variants, flags and components (skin-tone swatches, hair styles) are left out unless asked
for. Needs `pip install autocomics[openmoji]`.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator, Sequence

import numpy as np

from data_pipeline import cli
from data_pipeline.errors import UserError
from data_pipeline.shards import Sample, ShardTask, plan_shards
from data_pipeline.synthetic.world import PALETTE

from .openmoji_art import ATTRIBUTION, LIBRARY_URL, LICENSE, EmojiInfo, catalog_by_hexcode, glyph_on, load_catalog

DESCRIPTION = __doc__
SOURCE_NAME = "openmoji"
DEFAULT_BACKGROUND = "white"
# Skin-tone swatches and hair styles: parts of other emoji, left out unless their group is named.
COMPONENT_GROUP = "component"
RANDOM_BACKGROUND = "random"
# Render size when every requested size is smaller: the writer shrinks it with area interpolation.
MIN_RENDER_SIZE = 64

# {a_name}: the name with its article; {kws}: two or three keywords; {bg}: the background colour.
CAPTION_TEMPLATES = (
    "{name}",
    "{a_name}",
    "an emoji of {a_name}",
    "{a_name} emoji",
    "a cartoon {name}",
    "{a_name} icon, flat colours and black outlines",
    "{a_name} ({kws})",
    "a drawing of {a_name}: {kws}",
    "{a_name} on {a_bg} background",
    "{name}, {kws}, on {bg}",
)


class OpenMojiFilterError(UserError):
    """The filters name an unknown group or subgroup, or match no emoji."""


def _normalised(name: str) -> str:
    """'Travel & Places' -> 'travel-places', so groups can be named as Unicode or emojibase spell them."""
    words = name.lower().replace("&", " ").replace("_", " ").replace("-", " ").split()
    return "-".join(words)


def _split_list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _check_known(wanted: Sequence[str], known: set[str], what: str) -> set[str]:
    names = {_normalised(w) for w in wanted}
    unknown = sorted(names - known)
    if unknown:
        raise OpenMojiFilterError(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return names


def _matches_words(info: EmojiInfo, words: Sequence[str]) -> bool:
    vocabulary = set(info.name.lower().replace(":", " ").replace(",", " ").split()) | {k.lower() for k in info.keywords}
    return any(word in vocabulary or word == info.name.lower() for word in words)


def select_emoji(
    groups: Sequence[str] = (),
    subgroups: Sequence[str] = (),
    match: Sequence[str] = (),
    skin_tones: bool = False,
    flags: bool = False,
) -> list[EmojiInfo]:
    """The catalogue's emoji that pass every filter (an empty filter passes everything), in Unicode's order.
    `match` keeps emoji whose name or keywords contain any of the words."""
    catalog = load_catalog()
    group_set = _check_known(groups, {i.group for i in catalog}, "groups") if groups else None
    subgroup_set = _check_known(subgroups, {i.subgroup for i in catalog}, "subgroups") if subgroups else None
    words = [w.strip().lower() for w in match if w.strip()]
    chosen = [
        info
        for info in catalog
        if (skin_tones or not info.skin_tone)
        and (flags or not info.is_flag or (group_set and info.group in group_set))
        and (info.group != COMPONENT_GROUP or (group_set and COMPONENT_GROUP in group_set))
        and (group_set is None or info.group in group_set)
        and (subgroup_set is None or info.subgroup in subgroup_set)
        and (not words or _matches_words(info, words))
    ]
    if not chosen:
        raise OpenMojiFilterError("no emoji match the filters (see --groups/--subgroups/--match)")
    return chosen


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def make_captions(info: EmojiInfo, background: str, rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct phrasings (fewer when the templates run out); the first is the plain name."""
    name = info.name
    captions = [name]
    for _ in range(8 * count):
        if len(captions) >= count:
            break
        keywords = [k for k in info.keywords if k.lower() not in name.lower()] or list(info.keywords) or [name]
        picked = rng.choice(len(keywords), size=min(len(keywords), int(rng.integers(2, 4))), replace=False)
        caption = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))].format(
            name=name,
            a_name=_article(name),
            kws=", ".join(keywords[i] for i in sorted(picked)),
            bg=background,
            a_bg=_article(background),
        )
        if caption not in captions:
            captions.append(caption)
    return captions[:count]


def emoji_rng(seed: int, hexcode: str) -> np.random.Generator:
    """The generator of one emoji's background and captions: independent of the filters and the sharding."""
    return np.random.default_rng([int(seed), *(int(part, 16) for part in hexcode.split("-"))])


def produce_openmoji(
    task: ShardTask, size: int, background: str, seed: int, captions_per_image: int
) -> Iterator[Sample]:
    """Shard producer: task.items are OpenMoji hexcodes."""
    catalog = catalog_by_hexcode()
    backgrounds = tuple(PALETTE)
    for index, hexcode in enumerate(task.items):
        info = catalog[hexcode]
        rng = emoji_rng(seed, hexcode)
        bg = backgrounds[rng.integers(len(backgrounds))] if background == RANDOM_BACKGROUND else background
        captions = make_captions(info, bg, rng, captions_per_image)
        yield Sample(
            index=index,
            image=glyph_on(hexcode, size, PALETTE[bg]),
            caption=captions[0],
            captions=captions,
            source=SOURCE_NAME,
            url=LIBRARY_URL.format(hexcode=hexcode),
            license=LICENSE,
            attribution=ATTRIBUTION,
            attributes={
                "hexcode": hexcode,
                "emoji": info.text,
                "name": info.name,
                "group": info.group,
                "subgroup": info.subgroup,
                "keywords": list(info.keywords),
                "skin_tone": info.skin_tone,
                "background": bg,
            },
            group=f"{SOURCE_NAME}:{hexcode}",
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The shared writer options (--out, --sizes, --shard-size, ...), copied in as argparse's `parents=` does.
    cli.add_writer_options(parser)
    parser.set_defaults(image_format="png")  # flat colours and black outlines: JPEG would smear them
    pick = parser.add_argument_group("which emoji")
    pick.add_argument("--groups", help="comma-separated Unicode groups, e.g. animals-nature,travel-places")
    pick.add_argument("--subgroups", help="comma-separated Unicode subgroups, e.g. animal-mammal,transport-water")
    pick.add_argument("--match", help="comma-separated words; keep emoji whose name or keywords contain one")
    pick.add_argument("--skin-tones", action="store_true", help="include skin-tone variants (off by default)")
    pick.add_argument("--flags", action="store_true", help="include flags (off by default)")
    look = parser.add_argument_group("look and captions")
    look.add_argument(
        "--background",
        choices=(*PALETTE, RANDOM_BACKGROUND),
        default=DEFAULT_BACKGROUND,
        help="background colour, or random: a named colour per emoji (default: %(default)s)",
    )
    look.add_argument(
        "--captions-per-image", type=int, default=3, help="phrasings stored per image; the first is the name"
    )
    look.add_argument("--seed", type=int, default=0, help="seed of the phrasings and random backgrounds")


def run(args: argparse.Namespace) -> int:
    if args.captions_per_image < 1:
        raise UserError("--captions-per-image must be >= 1")
    chosen = select_emoji(
        groups=_split_list(args.groups),
        subgroups=_split_list(args.subgroups),
        match=_split_list(args.match),
        skin_tones=args.skin_tones,
        flags=args.flags,
    )
    config = cli.writer_config_from_args(args)
    render_size = max(MIN_RENDER_SIZE, config.largest_side)
    glyph_on(chosen[0].hexcode, 8, PALETTE["white"])  # fails here, once, when the art is not installed
    tasks = plan_shards([info.hexcode for info in chosen], config.shard_size)
    produce = functools.partial(
        produce_openmoji,
        size=render_size,
        background=args.background,
        seed=args.seed,
        captions_per_image=args.captions_per_image,
    )
    source = {
        "type": SOURCE_NAME,
        "count": len(chosen),
        "seed": args.seed,
        "background": args.background,
        "render_size": render_size,
        "captions_per_image": args.captions_per_image,
        "license": LICENSE,
        "attribution": ATTRIBUTION,
    }
    filters = {
        "groups": _split_list(args.groups),
        "subgroups": _split_list(args.subgroups),
        "match": _split_list(args.match),
        "skin_tones": args.skin_tones,
        "flags": args.flags,
    }
    return cli.run_build(args, tasks, produce, sources=[source], filters=filters, config=config)
