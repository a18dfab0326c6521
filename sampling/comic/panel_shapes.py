"""Each panel drawn at its box's shape: the sample (height, width) for every panel of a script, and generation
that batches panels of one shape together (a batch is one tensor, so one shape)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby

from data_pipeline.errors import UserError

from ..shapes import Shape, ShapeError, shape_for_aspect
from .arrange import panel_aspects
from .script import ComicScript

PanelRef = tuple[int, int]  # (page, panel), 1-based


class PanelShapeError(UserError, ValueError):
    """A panel box whose shape the models cannot draw."""


def panel_shapes(script: ComicScript, style, pipeline) -> dict[PanelRef, Shape]:
    """The base-stage (height, width) of every panel: its box's aspect within the model's pixel budget (the
    model's square size for square boxes)."""
    shapes = {}
    for page_number, page in enumerate(script.pages, 1):
        for panel_number, aspect in enumerate(panel_aspects(page, style), 1):
            try:
                shapes[(page_number, panel_number)] = shape_for_aspect(pipeline.models, aspect)
            except ShapeError as exc:
                raise PanelShapeError(f"page {page_number} panel {panel_number}: {exc}") from None
    return shapes


def page_panel_shapes(page, style, models) -> list[Shape]:
    """The (height, width) each panel of one page is drawn at (a ShapeError names no panel: see panel_shapes)."""
    return [shape_for_aspect(models, aspect) for aspect in panel_aspects(page, style)]


def generate_in_shapes(
    pipeline,
    prompts: Sequence[str],
    seeds: Sequence[int],
    shapes: Sequence[Shape],
    batch_size: int,
    progress: bool,
) -> Iterator[list]:
    """`pipeline.generate_batches` over runs of equal shape, in the given order (sort by shape for full batches)."""
    start = 0
    for shape, run in groupby(shapes):
        count = len(list(run))
        end = start + count
        yield from pipeline.generate_batches(
            prompts[start:end], seeds[start:end], batch_size=batch_size, progress=progress, shape=shape
        )
        start = end
