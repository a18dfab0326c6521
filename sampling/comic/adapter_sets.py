"""Panels drawn with their adapters: each panel's adapter set (the script's style adapter, its characters' and any
the caller adds), checked before anything is drawn, and applied once per set while that set's panels are drawn.

An adapter is applied to the stage it was trained on (the base or the upsampler, told by the base model id its
folder records); the stage gets its exact base weights back when the set's panels are done, even on an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from finetune.adapters.errors import AdapterError
from finetune.adapters.specs import AdapterSpec
from finetune.model_id import model_id_for, same_weights

from .script import ComicScript, Panel

AdapterSet = tuple[AdapterSpec, ...]
PanelRef = tuple[int, int]


def panel_adapter_sets(
    script: ComicScript, refs: dict[PanelRef, Panel], extra: Sequence[AdapterSpec] = ()
) -> dict[PanelRef, AdapterSet]:
    """Each panel's adapters: `extra` (e.g. the command line's --adapter), then the script's for that panel."""
    return {ref: tuple(dict.fromkeys([*extra, *script.adapters_for(panel)])) for ref, panel in refs.items()}


def adapter_metadata(adapters: AdapterSet) -> list[dict]:
    """What a panel's PNG records about its adapters: folder, id (a hash of its files) and scale."""
    return [{"path": str(spec.path), "id": model_id_for(spec.path), "scale": spec.scale} for spec in adapters]


def stage_of(pipeline, spec: AdapterSpec):
    """The pipeline stage (SamplingModel) the adapter was trained on; AdapterError when neither."""
    from finetune.adapters.format import read_adapter_config  # lazy: peft takes seconds to import

    if not spec.path.is_dir():
        raise AdapterError(f"adapter {spec.path}: no such folder")
    config = read_adapter_config(spec.path)
    stages = [s for s in (pipeline.models.base, pipeline.models.upsampler) if s is not None]
    for stage in stages:
        if same_weights(config.base_model_id, stage.model_id):
            return stage
    raise AdapterError(
        f"adapter {spec.path} was trained on model {config.base_model_id}, not on "
        f"{' or '.join(s.model_id for s in stages)}; apply it to the model it was trained on"
    )


def check_adapter_sets(pipeline, sets: Sequence[AdapterSet]) -> dict[AdapterSpec, object]:
    """{adapter: its stage} for every adapter in `sets`, each checked before any panel is drawn."""
    stages = {spec: stage_of(pipeline, spec) for adapters in sets for spec in adapters}
    if stages:
        from finetune.adapters.lora import lora_layers  # lazy: peft takes seconds to import

        for stage in {id(s): s for s in stages.values()}.values():
            if any(True for _ in lora_layers(stage.model)):
                raise AdapterError(
                    f"{stage.source} already has adapters applied; pass them to make_comic(adapters=...) instead"
                )
    return stages


@contextlib.contextmanager
def adapters_applied(adapters: AdapterSet, stages: dict[AdapterSpec, object]) -> Iterator[None]:
    """`adapters` applied to their stages for the duration; the stages' base weights restored after."""
    if not adapters:
        yield
        return
    from finetune.adapters.apply import apply_adapters  # lazy: peft takes seconds to import

    touched = {id(stages[spec]): stages[spec] for spec in adapters}
    try:
        for stage in touched.values():
            mine = [spec for spec in adapters if stages[spec] is stage]
            apply_adapters(stage.model, mine, base_model_id=stage.model_id)
        yield
    finally:
        for stage in touched.values():
            apply_adapters(stage.model, [], base_model_id=stage.model_id)
