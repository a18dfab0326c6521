"""Page geometry: where the title and each panel go on a comic page."""

from __future__ import annotations

from dataclasses import dataclass

from .script import Layout


@dataclass(frozen=True)
class Box:
    """A pixel rectangle, x1/y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    def inset(self, d: int) -> "Box":
        return Box(self.x0 + d, self.y0 + d, self.x1 - d, self.y1 - d)

    def overlap(self, other: "Box") -> int:
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(w, 0) * max(h, 0)

    def contains(self, other: "Box") -> bool:
        return self.x0 <= other.x0 and self.y0 <= other.y0 and other.x1 <= self.x1 and other.y1 <= self.y1

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class PageGeometry:
    size: tuple[int, int]
    title_box: Box | None
    panel_boxes: tuple[Box, ...]


def page_geometry(
    layout: Layout, n_panels: int, panel_px: int, margin: int, gutter: int, title_height: int
) -> PageGeometry:
    """Square panels of `panel_px` in a rows x cols grid; a short last row is centred."""
    if n_panels < 1 or n_panels > layout.cells:
        raise ValueError(f"{n_panels} panels do not fit layout {layout.describe()}")
    rows = -(-n_panels // layout.cols)  # rows actually used
    width = 2 * margin + layout.cols * panel_px + (layout.cols - 1) * gutter
    top = margin + (title_height + gutter if title_height else 0)
    height = top + rows * panel_px + (rows - 1) * gutter + margin
    boxes = []
    for i in range(n_panels):
        row, col = divmod(i, layout.cols)
        in_row = min(layout.cols, n_panels - row * layout.cols)
        offset = (layout.cols - in_row) * (panel_px + gutter) // 2
        x = margin + offset + col * (panel_px + gutter)
        y = top + row * (panel_px + gutter)
        boxes.append(Box(x, y, x + panel_px, y + panel_px))
    title_box = Box(margin, margin, width - margin, margin + title_height) if title_height else None
    return PageGeometry((width, height), title_box, tuple(boxes))
