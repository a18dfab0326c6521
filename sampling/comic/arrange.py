"""Where a page's panels go: grid or named layout, the page's gutter and bleed, and its reading order.

Right-to-left pages (manga) mirror the left-to-right boxes about the page's vertical centre line, so panel 1 sits
top right; balloons and narration are placed as on the mirrored picture and their boxes mirrored back, so the
first balloon sits on the right. The art and the lettering themselves are never flipped.
"""

from __future__ import annotations

from dataclasses import replace

from .layout import Box, PageGeometry, page_geometry
from .layouts import NamedLayout
from .lettering import Lettering
from .script import Page


def page_style(page: Page, style):
    """`style` (a PageStyle) with the page's own gutter and bleed: a bleed page has no outer margin and no
    panel borders, so the art runs to the paper's edge."""
    if page.gutter is not None:
        style = replace(style, gutter=page.gutter)
    if page.bleed:
        style = replace(style, margin=0, border=0)
    return style


def page_boxes(page: Page, style) -> PageGeometry:
    """The page's size, title box and panel boxes (in reading order) for `style` (already `page_style`d)."""
    title_height = style.title_height if page.title else 0
    if isinstance(page.layout, NamedLayout):
        geometry = named_geometry(page.layout, style.panel_px, style.margin, style.gutter, title_height)
    else:
        geometry = page_geometry(
            page.layout, len(page.panels), style.panel_px, style.margin, style.gutter, title_height
        )
    return mirror_geometry(geometry) if page.reading_order == "rtl" else geometry


def named_geometry(layout: NamedLayout, panel_px: int, margin: int, gutter: int, title_height: int) -> PageGeometry:
    """Each panel covers its block of `panel_px` cells and the gutters inside the block."""
    step = panel_px + gutter
    width = 2 * margin + layout.cols * step - gutter
    top = margin + (title_height + gutter if title_height else 0)
    height = top + layout.rows * step - gutter + margin
    boxes = tuple(
        Box(margin + c0 * step, top + r0 * step, margin + c1 * step - gutter, top + r1 * step - gutter)
        for r0, c0, r1, c1 in layout.spans
    )
    title_box = Box(margin, margin, width - margin, margin + title_height) if title_height else None
    return PageGeometry((width, height), title_box, boxes)


def panel_aspects(page: Page, style) -> list[float]:
    """Width / height of each panel's box on the page, in reading order."""
    return [box.width / box.height for box in page_boxes(page, page_style(page, style)).panel_boxes]


def mirror_box(box: Box, left: int, right: int) -> Box:
    """`box` reflected within the span [left, right)."""
    return Box(left + right - box.x1, box.y0, left + right - box.x0, box.y1)


def mirror_geometry(geometry: PageGeometry) -> PageGeometry:
    width = geometry.size[0]
    boxes = tuple(mirror_box(box, 0, width) for box in geometry.panel_boxes)
    return PageGeometry(geometry.size, geometry.title_box, boxes)


def mirror_lettering(item: Lettering, within: Box) -> Lettering:
    """A placed balloon or narration box reflected within a panel's `within` box (its text is drawn unflipped)."""
    left, right = within.x0, within.x1
    tail = tuple((left + right - x, y) for x, y in item.tail)
    return replace(item, box=mirror_box(item.box, left, right), body=mirror_box(item.body, left, right), tail=tail)


def arrangement_parameters(page: Page) -> dict:
    """The page's gutter, bleed and reading order for its stored parameters, when not the defaults (so pages of
    earlier runs, made before these settings existed, still match)."""
    params = {}
    if page.gutter is not None:
        params["gutter"] = page.gutter
    if page.bleed:
        params["bleed"] = True
    if page.reading_order != "ltr":
        params["reading_order"] = page.reading_order
    return params
