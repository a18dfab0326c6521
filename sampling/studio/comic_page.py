"""The Generate tab's page options: layout, reading order and export formats, checked like the other form values
(an unusable choice falls back with a message), and the page and exports they make."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_pipeline.fsutil import atomic_write_json

from ..comic.export import export_comic
from ..comic.layouts import AUTO, NAMED_LAYOUTS, auto_layout
from ..comic.page import PageStyle
from ..comic.script import READING_ORDERS, Page, Panel, default_layout

GRID = "grid"
LAYOUT_CHOICES = (GRID, AUTO, *NAMED_LAYOUTS)
EXPORT_CHOICES = ("pdf", "cbz", "webtoon")


@dataclass(frozen=True)
class PageOptions:
    layout: str = GRID
    reading_order: str = "ltr"
    formats: tuple[str, ...] = ()


DEFAULT_OPTIONS = PageOptions()


def page_options(n_panels: int, layout, reading_order, formats) -> tuple[PageOptions, list[str]]:
    """Form values -> PageOptions and messages about anything replaced (a layout made for another panel count
    falls back to auto)."""
    messages = []
    layout = str(layout or GRID)
    if layout not in LAYOUT_CHOICES:
        messages.append(f"unknown layout {layout!r}; using {GRID}")
        layout = GRID
    elif layout in NAMED_LAYOUTS and NAMED_LAYOUTS[layout].cells != n_panels:
        messages.append(f"layout {layout} holds {NAMED_LAYOUTS[layout].cells} panel(s), not {n_panels}; using {AUTO}")
        layout = AUTO
    order = str(reading_order or "ltr")
    if order not in READING_ORDERS:
        messages.append(f"unknown reading order {order!r}; using ltr")
        order = "ltr"
    chosen = tuple(f for f in EXPORT_CHOICES if f in (formats or ()))
    return PageOptions(layout, order, chosen), messages


def studio_page(captions: list[str], options: PageOptions) -> Page:
    """The page: each caption lettered in its panel's narration box, in the chosen layout and reading order."""
    n = len(captions)
    if options.layout == GRID:
        layout = default_layout(n)
    elif options.layout == AUTO:
        layout = auto_layout(n) or default_layout(n)
    else:
        layout = NAMED_LAYOUTS[options.layout]
    panels = tuple(Panel(caption=c, narration=c) for c in captions)
    return Page(None, layout, panels, reading_order=options.reading_order)


def studio_style(models) -> PageStyle:
    """At least 192 px a panel, so a narration box holds a caption of a dozen words even for 32 px models."""
    output_size = (models.upsampler or models.base).image_size
    return PageStyle(panel_px=max(192, min(320, output_size * 2)))


def export_page(out_dir: Path, page_path: Path, layout: dict, title: str, options: PageOptions) -> list[Path]:
    """The page exported as asked, through the comic exporters (which read a comic.json like a comic run's)."""
    if not options.formats:
        return []
    comic = {
        "title": title,
        "reading_order": options.reading_order,
        "pages": [{"page": 1, "file": page_path.name}],
        "panels": [{"page": 1, "panel": p["panel"], "box": p["box"]} for p in layout["panels"]],
    }
    atomic_write_json(out_dir / "comic.json", comic)
    return export_comic(out_dir, ("png", *options.formats))
