"""Compose a comic page: panel images in bordered cells, gutters, title, narration and balloons."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from .layout import Box, page_geometry
from .lettering import INK, PAPER, draw_lettering, draw_title, place_lettering
from .script import Page
from .subject import CoverageCounter, subject_mask


@dataclass(frozen=True)
class PageStyle:
    panel_px: int = 320  # panels are resized to this on the page, so lettering stays legible on 64px images
    margin: int = 24
    gutter: int = 16
    border: int = 3
    title_height: int = 48
    max_font: int | None = None  # default: scaled from panel_px
    min_font: int | None = None
    avoid_subject: bool = True  # place lettering off each panel's subject, found from its picture

    def fonts(self) -> tuple[int, int]:
        max_font = self.max_font or max(11, self.panel_px // 18)
        min_font = self.min_font or max(10, self.panel_px // 30)
        return max_font, min(min_font, max_font)


def compose_page(
    page: Page, images: list[Image.Image], style: PageStyle = PageStyle()
) -> tuple[Image.Image, dict, list[str]]:
    """Returns the page image, its layout (boxes of panels and lettering, for metadata) and warnings."""
    if len(images) != len(page.panels):
        raise ValueError(f"page has {len(page.panels)} panels but {len(images)} images were given")
    geometry = page_geometry(
        page.layout,
        len(page.panels),
        style.panel_px,
        style.margin,
        style.gutter,
        style.title_height if page.title else 0,
    )
    canvas = Image.new("RGB", geometry.size, PAPER)
    draw = ImageDraw.Draw(canvas)
    if page.title and geometry.title_box:
        draw_title(draw, geometry.title_box, page.title)
    max_font, min_font = style.fonts()
    layout = {
        "size": list(geometry.size),
        "layout": page.layout.describe(),
        "title_box": geometry.title_box.as_list() if geometry.title_box else None,
        "panels": [],
    }
    warnings: list[str] = []
    for number, (panel, image, box) in enumerate(zip(page.panels, images, geometry.panel_boxes), 1):
        tile = image.convert("RGB")
        if tile.size != (box.width, box.height):
            tile = tile.resize((box.width, box.height), Image.Resampling.LANCZOS)
        canvas.paste(tile, (box.x0, box.y0))
        inner = box.inset(style.border)  # lettering sits inside the border
        subject = (
            _subject_of(image, box, inner) if style.avoid_subject and (panel.narration or panel.dialogue) else None
        )
        items, notes = place_lettering(inner, panel.narration, panel.dialogue, max_font, min_font, subject)
        for item in items:
            draw_lettering(draw, item)
        # The border goes on last so narration boxes tuck under it cleanly.
        draw.rectangle(Box(box.x0, box.y0, box.x1 - 1, box.y1 - 1).as_list(), outline=INK, width=style.border)
        warnings += [f"panel {number}: {note}" for note in notes]
        layout["panels"].append({"panel": number, "box": box.as_list(), "lettering": [i.to_json() for i in items]})
    return canvas, layout, warnings


def _subject_of(image: Image.Image, box: Box, inner: Box) -> CoverageCounter | None:
    """The subject of the picture pasted into `box`, as seen inside `inner` where lettering goes."""
    mask = subject_mask(image, (box.width, box.height))
    if mask is None:
        return None
    mask = mask[inner.y0 - box.y0 : inner.y1 - box.y0, inner.x0 - box.x0 : inner.x1 - box.x0]
    return CoverageCounter(mask, (inner.x0, inner.y0)) if mask.any() else None
