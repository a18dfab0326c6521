"""Panels drawn with their adapters: each panel's adapter set (those already applied to the pipeline, e.g. by the
command line's --adapter, then the script's style adapter and its characters'), checked before anything is drawn,
and applied once per set while that set's panels are drawn; the pipeline's own adapters are put back after.

Adapters go to the model they were trained on (sampling.adapters: the base or the upsampler), and each panel
records them exactly as the pipeline records its own (path, id, scale, model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from finetune.adapters.specs import AdapterSpec
from finetune.model_id import model_id_for

from ..adapters import route_adapters
from .script import ComicScript, Panel

AdapterSet = tuple[AdapterSpec, ...]
PanelRef = tuple[int, int]


def pipeline_adapters(pipeline) -> AdapterSet:
    """The adapters applied to the pipeline before the comic started."""
    return tuple(AdapterSpec(Path(a["path"]), float(a["scale"])) for a in pipeline.adapters)


def panel_adapter_sets(
    script: ComicScript, refs: dict[PanelRef, Panel], applied: Sequence[AdapterSpec] = ()
) -> dict[PanelRef, AdapterSet]:
    """Each panel's adapters: `applied` (the pipeline's own), then the script's for that panel, each once."""
    return {ref: tuple(dict.fromkeys([*applied, *script.adapters_for(panel)])) for ref, panel in refs.items()}


def check_adapter_sets(pipeline, sets: Sequence[AdapterSet]) -> dict[AdapterSet, list[dict]]:
    """{set: its metadata} for every set, each adapter checked (a readable folder, trained on one of the
    pipeline's models) before any panel is drawn. The metadata is what the pipeline records once it is applied."""
    metadata = {}
    for adapters in dict.fromkeys(sets):
        routed = route_adapters(pipeline.models, adapters) if adapters else {}
        metadata[adapters] = [
            {"path": str(spec.path), "id": model_id_for(spec.path), "scale": spec.scale, "model": role}
            for role, specs in routed.items()
            for spec in specs
        ]
    return metadata


@contextlib.contextmanager
def adapters_applied(pipeline, adapters: AdapterSet, restore: AdapterSet) -> Iterator[None]:
    """`adapters` applied to the pipeline for the duration, `restore` (its own) after, even on an error."""
    if adapters == restore:
        yield
        return
    try:
        pipeline.set_adapters(list(adapters))
        yield
    finally:
        pipeline.set_adapters(list(restore))
