"""LoRA adapters on the models of a sampling pipeline (`--adapter PATH[:SCALE]`, the studio's adapter choice).

An adapter applies only to the weights it was trained on: its folder records that model's id (finetune.model_id).
Each adapter goes to the pipeline's base model when it was trained on it, else to the upsampler when it was
trained on that one; any other adapter is refused before either model changes. Adapters trained with
`python -m finetune train --adapter lora` on a base model therefore act on the base stage only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# The package loads its peft-based modules on first attribute use: peft (and the transformers it imports) takes
# seconds, and a pipeline without adapters never touches them.
import finetune.adapters as lora
from finetune.adapters.errors import AdapterError
from finetune.adapters.specs import AdapterSpec, check_scale
from finetune.model_id import same_weights

from .loading import ModelPair, SamplingModel

ROLES = ("base", "upsampler")


def _models_by_role(models: ModelPair) -> dict[str, SamplingModel]:
    return {role: sm for role, sm in zip(ROLES, (models.base, models.upsampler)) if sm is not None}


def route_adapters(models: ModelPair, specs: Sequence[AdapterSpec]) -> dict[str, list[AdapterSpec]]:
    """{role: the adapters for that model}: each adapter to the base when trained on it, else to the upsampler."""
    by_role = _models_by_role(models)
    routed: dict[str, list[AdapterSpec]] = {role: [] for role in by_role}
    for spec in specs:
        trained_on = lora.read_adapter_config(spec.path).base_model_id
        role = next((r for r, sm in by_role.items() if same_weights(trained_on, sm.model_id)), None)
        if role is None:
            ours = " and ".join(f"{sm.model_id} ({r})" for r, sm in by_role.items())
            raise AdapterError(
                f"adapter {spec.path} was trained on model {trained_on}, not on this pipeline's {ours}; "
                "an adapter applies only to the model it was trained on"
            )
        routed[role].append(spec)
    return routed


def apply_to_models(models: ModelPair, specs: Sequence[AdapterSpec]) -> None:
    """Make `specs` the pipeline's adapters (replacing any applied before; none restores the models exactly),
    recorded on each model's `adapters` for the image metadata."""
    routed = route_adapters(models, specs)
    for role, sm in _models_by_role(models).items():
        if not routed[role] and not sm.adapters:
            continue  # nothing applied and nothing to apply: peft stays unloaded
        # Fused into the weights: sampling with adapters costs what it costs without them.
        applied = lora.apply_adapters(sm.model, routed[role], base_model_id=sm.model_id, fuse=True)
        sm.model.eval()
        sm.adapters = [{**a.metadata(), "model": role} for a in applied]


def adapter_metadata(models: ModelPair) -> list[dict]:
    """Every adapter applied to the pipeline: path, id, scale and the model it acts on (base or upsampler)."""
    return [a for sm in _models_by_role(models).values() for a in sm.adapters]


def specs_from(paths_and_scales: Sequence[tuple[str | Path, float]]) -> list[AdapterSpec]:
    """(folder, scale) pairs as adapter specs, every scale checked."""
    return [AdapterSpec(Path(path), check_scale(float(scale))) for path, scale in paths_and_scales]
