"""The models a studio user can pick: the bundled pipeline and model folders found on disk."""
from __future__ import annotations

from pathlib import Path

from ..loading import is_model_folder, is_pipeline_folder

BUNDLED = "bundled"


def _bundled_available() -> bool:
    try:
        from finetune.bundled import bundled_model_path

        return Path(bundled_model_path("base")).exists()
    except Exception:  # not installed, or the model core has none: simply not offered
        return False


def _is_base_model(path: Path) -> bool:
    if is_pipeline_folder(path):
        return True
    if not is_model_folder(path):
        return False
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    options = config.get("options", config)
    return not options.get("super_res") and not options.get("inpaint")


def discover_models(models_dir: Path | None, runs_dir: Path | None = None) -> list[tuple[str, str]]:
    """(label, value) pairs: ``bundled`` first, then base-model and pipeline folders.

    Looks at ``models_dir`` and its direct subfolders, and at the models exported by studio
    fine-tunes (``runs_dir/*/model``), so a model trained in the Train tab can be used at once.
    """
    choices: list[tuple[str, str]] = []
    if _bundled_available():
        choices.append(("bundled model", BUNDLED))
    candidates: list[Path] = []
    if models_dir and Path(models_dir).is_dir():
        root = Path(models_dir)
        candidates += [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    if runs_dir and Path(runs_dir).is_dir():
        candidates += sorted(p / "model" for p in Path(runs_dir).iterdir() if (p / "model").is_dir())
    seen = set()
    for path in candidates:
        if path.resolve() in seen or not _is_base_model(path):
            continue
        seen.add(path.resolve())
        label = path.name if path.name != "model" else f"{path.parent.name} (trained here)"
        if is_pipeline_folder(path):
            label += " (with upsampler)"
        choices.append((label, str(path)))
    return choices
