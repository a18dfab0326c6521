"""Named page layouts beyond grids: panels that span cells of a small grid, so each has its own shape.

A layout is a grid of `rows` x `cols` unit cells (each `panel_px` square on the page, with gutters between) and,
in left-to-right reading order, the block of cells each panel covers. A panel's box (and so the aspect ratio it is
generated at) follows from its block: a panel two cells wide is a wide establishing shot, one two cells tall a
column. Right-to-left pages mirror these boxes (see `reading_order`).

  splash     one panel over the whole page (2 x 3 cells, portrait)
  3-tier     three full-width tiers, one wide panel each
  wide-top   a wide panel over a row of two
  l-shape    a tall panel on the left and a wide one along the bottom, framing two small panels: an L
  auto       the layout that fits the page's panel count (AUTO_BY_COUNT), else the default grid
"""

from __future__ import annotations

from dataclasses import dataclass

Span = tuple[int, int, int, int]  # row0, col0, row1, col1 (row1/col1 exclusive)


@dataclass(frozen=True)
class NamedLayout:
    name: str
    rows: int
    cols: int
    spans: tuple[Span, ...]  # one per panel, in left-to-right reading order

    @property
    def cells(self) -> int:
        """How many panels the layout holds (as a grid's `cells`)."""
        return len(self.spans)

    def describe(self) -> str:
        return self.name


NAMED_LAYOUTS = {
    layout.name: layout
    for layout in (
        NamedLayout("splash", 3, 2, ((0, 0, 3, 2),)),
        NamedLayout("3-tier", 3, 2, ((0, 0, 1, 2), (1, 0, 2, 2), (2, 0, 3, 2))),
        NamedLayout("wide-top", 2, 2, ((0, 0, 1, 2), (1, 0, 2, 1), (1, 1, 2, 2))),
        NamedLayout("l-shape", 3, 2, ((0, 0, 2, 1), (0, 1, 1, 2), (1, 1, 2, 2), (2, 0, 3, 2))),
    )
}
AUTO = "auto"
# What `auto` picks for a page's panel count; other counts get the default grid (script.default_layout).
AUTO_BY_COUNT = {1: "splash", 3: "wide-top", 4: "l-shape"}


def layout_names() -> tuple[str, ...]:
    return (*NAMED_LAYOUTS, AUTO)


def auto_layout(n_panels: int) -> NamedLayout | None:
    """The named layout `auto` chooses for `n_panels`, or None for a grid."""
    name = AUTO_BY_COUNT.get(n_panels)
    return NAMED_LAYOUTS[name] if name else None
