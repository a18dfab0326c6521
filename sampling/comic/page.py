"""Compose a comic page: panel images in bordered cells, gutters, title, narration and balloons."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageOps

from .arrange import mirror_lettering, page_boxes, page_style
from .layout import Box
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
    style = page_style(page, style)
    geometry = page_boxes(page, style)
    rtl = page.reading_order == "rtl"
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
        art = _cropped_to_aspect(image.convert("RGB"), box)
        size = (box.width, box.height)
        tile = art if art.size == size else art.resize(size, Image.Resampling.LANCZOS)
        canvas.paste(tile, (box.x0, box.y0))
        inner = box.inset(style.border)  # lettering sits inside the border
        # Right to left: lettering is placed as on the mirrored picture, then mirrored back (text unflipped).
        seen = ImageOps.mirror(art) if rtl else art
        subject = _subject_of(seen, box, inner) if style.avoid_subject and (panel.narration or panel.dialogue) else None
        items, notes = place_lettering(inner, panel.narration, panel.dialogue, max_font, min_font, subject)
        items = [mirror_lettering(item, inner) for item in items] if rtl else items
        for item in items:
            draw_lettering(draw, item)
        # The border goes on last so narration boxes tuck under it cleanly.
        if style.border:
            draw.rectangle(Box(box.x0, box.y0, box.x1 - 1, box.y1 - 1).as_list(), outline=INK, width=style.border)
        warnings += [f"panel {number}: {note}" for note in notes]
        layout["panels"].append({"panel": number, "box": box.as_list(), "lettering": [i.to_json() for i in items]})
    return canvas, layout, warnings


def _cropped_to_aspect(image: Image.Image, box: Box) -> Image.Image:
    """The centre of `image` with `box`'s aspect ratio (panels are drawn near, not always at, their box's aspect)."""
    width, height = image.size
    crop_w = min(width, round(height * box.width / box.height))
    crop_h = min(height, round(width * box.height / box.width))
    if (crop_w, crop_h) == (width, height):
        return image
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return image.crop((left, top, left + crop_w, top + crop_h))


def _subject_of(image: Image.Image, box: Box, inner: Box) -> CoverageCounter | None:
    """The subject of the picture pasted into `box`, as seen inside `inner` where lettering goes."""
    mask = subject_mask(image, (box.width, box.height))
    if mask is None:
        return None
    mask = mask[inner.y0 - box.y0 : inner.y1 - box.y0, inner.x0 - box.x0 : inner.x1 - box.x0]
    return CoverageCounter(mask, (inner.x0, inner.y0)) if mask.any() else None
