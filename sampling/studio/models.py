"""The models a studio user can pick: the bundled pipeline, OpenAI's GLIDE models already in the model cache, and
model folders found on disk.

Users choose models by key from this allow-list; the studio never loads a path typed in a form, and a key
that is not on the list gets the same answer whether or not some file by that name exists on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_pipeline.errors import UserError
from finetune import bundled_models
from finetune.hub import PIPELINES, cached_model_dir, list_cached_models
from finetune.model.options import resolve_options
from finetune.model_folder import read_config

from ..loading import BUNDLED_NAME, is_model_folder, is_pipeline_folder

MAX_REASON_CHARS = 200
EMOJI_NAME = "bundled-emoji"
EMOJI_LABEL = "bundled emoji model (OpenMoji art, CC BY-SA 4.0)"  # the model list's label, licence included


class UnknownModel(UserError, ValueError):
    """A model key that is not on the studio's list."""


@dataclass(frozen=True)
class ModelChoice:
    key: str  # what the forms send: "bundled", "bundled-emoji", "glide", "glide-base", "models/<f>" or "trained/<run>"
    label: str
    path: Path | None  # None: the bundled pipeline or a cached released model (see `name`)
    problem: str = ""  # why a folder found on disk cannot be offered (empty: usable)
    name: str = ""  # a released model's or pipeline's name, loaded from the cache only (the studio runs offline)

    @property
    def usable(self) -> bool:
        return not self.problem

    @property
    def source(self) -> str:
        """What the model loader takes: ``bundled``, a cached model's name, or the folder's path."""
        return self.name or (BUNDLED_NAME if self.path is None else str(self.path))

    @property
    def base_folder(self) -> Path | None:
        """The base model's folder for a fine-tune (None: the bundled base)."""
        if self.name:
            return cached_model_dir(PIPELINES.get(self.name, (self.name,))[0])
        if self.path is not None and is_pipeline_folder(self.path):
            return self.path / "base"
        return self.path


def _bundled_available(pipeline: str = BUNDLED_NAME) -> bool:
    try:
        return Path(bundled_models.bundled_model_path("base", pipeline)).exists()
    except Exception:  # the model core has none (or the emoji pipeline is not trained yet): simply not offered
        return False


def bundled_choices() -> list[ModelChoice]:
    """The bundled pipelines that are installed: ``bundled`` (shapes) and ``bundled-emoji`` (shipped; absent from a
    checkout that removed its weights)."""
    choices = [ModelChoice(BUNDLED_NAME, "bundled model", None)] if _bundled_available() else []
    if _bundled_available(EMOJI_NAME):
        # offered as its pipeline folder, so loading and fine-tuning take it like any pipeline folder
        path = bundled_models.bundled_pipeline_path(EMOJI_NAME)
        choices.append(ModelChoice(EMOJI_NAME, EMOJI_LABEL, path))
    return choices


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 1] + "…"


def _model_options(folder: Path) -> dict:
    """The folder's validated GLIDE options, by the model core's own reader (raises on a bad config)."""
    return resolve_options(read_config(folder)["options"])


def base_model_problem(path: Path) -> str:
    """Why ``path`` cannot be sampled from as a base model or pipeline ("" when it can)."""
    try:
        if is_pipeline_folder(path):
            if _model_options(path / "base").get("super_res"):
                return "its base/ is an upsampler"
            if not _model_options(path / "upsampler").get("super_res"):
                return "its upsampler/ is not an upsampler"
            return ""
        options = _model_options(path)
    except Exception as exc:  # any malformed folder is reported, never fatal to the studio
        return _one_line(f"unreadable model folder: {str(exc).replace(str(path), path.name)}")
    if options.get("super_res"):
        return "an upsampler, not a base model"
    if options.get("inpaint"):
        return "an inpainting model, not a text-to-image base model"
    return ""


def cached_glide_choices() -> list[ModelChoice]:
    """OpenAI's text-to-image GLIDE base already converted in the model cache: the `glide` pipeline when its
    upsampler is cached too, else `glide-base` alone. Nothing is ever fetched for the list."""
    cached = set(list_cached_models())
    base, upsampler = PIPELINES["glide"]
    if base not in cached:
        return []
    if upsampler in cached:
        return [ModelChoice("glide", "glide (OpenAI GLIDE, with upsampler)", None, name="glide")]
    return [ModelChoice(base, f"{base} (OpenAI GLIDE)", None, name=base)]


def _candidates(models_dir: Path | None, runs_dir: Path | None) -> list[tuple[str, str, Path]]:
    """(key, label, folder) for every folder that looks like a model or pipeline folder."""
    found: list[tuple[str, str, Path]] = []
    if models_dir and Path(models_dir).is_dir():
        root = Path(models_dir)
        for path in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
            if is_model_folder(path) or is_pipeline_folder(path):
                found.append((f"models/{path.name}", path.name, path))
    if runs_dir and Path(runs_dir).is_dir():
        for run in sorted(p for p in Path(runs_dir).iterdir() if (p / "model").is_dir()):
            if is_model_folder(run / "model"):
                found.append((f"trained/{run.name}", f"{run.name} (trained here)", run / "model"))
    return found


def discover_models(models_dir: Path | None, runs_dir: Path | None = None) -> list[ModelChoice]:
    """Every model the studio found: ``bundled`` first, then model and pipeline folders, usable or not.

    Looks at ``models_dir`` and its direct subfolders, and at the models exported by studio
    fine-tunes (``runs_dir/*/model``), so a model trained in the Train tab can be used at once.
    """
    choices = bundled_choices()
    choices += cached_glide_choices()
    seen_keys, seen_paths = {c.key for c in choices}, set()
    for key, label, path in _candidates(models_dir, runs_dir):
        if key in seen_keys or path.resolve() in seen_paths:
            continue
        seen_keys.add(key)
        seen_paths.add(path.resolve())
        if is_pipeline_folder(path):
            label += " (with upsampler)"
        choices.append(ModelChoice(key, label, path, base_model_problem(path)))
    return choices


def allowed_models(models_dir: Path | None, runs_dir: Path | None = None) -> dict[str, ModelChoice]:
    """The allow-list: every model a studio user may pick, by key."""
    return {choice.key: choice for choice in discover_models(models_dir, runs_dir) if choice.usable}


def resolve_model(key: str, models_dir: Path | None, runs_dir: Path | None = None) -> ModelChoice:
    """The allowed model ``key`` names; anything else is refused with one message that reveals nothing."""
    choice = allowed_models(models_dir, runs_dir).get(str(key or BUNDLED_NAME))
    if choice is None:
        raise UnknownModel(
            "that model is not one of the studio's models; pick one from the list "
            "(press 'Refresh model list' to see new folders)"
        )
    return choice
