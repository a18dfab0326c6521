"""The model names users type and where OpenAI's released GLIDE checkpoints live (the one URL table).

The release is OpenAI's dec-2021 GLIDE files, the same ones glide-text2im downloads. Each single-model name
maps to one file; a pipeline name maps to a base and an upsampler name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import HubError

RELEASE_URL = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"
URL_ENV = "AUTOCOMICS_GLIDE_URL"  # a mirror (or a test server) holding the same files


@dataclass(frozen=True)
class ReleasedModel:
    name: str
    file: str  # file name in the release folder, also its key in the release manifest (without .pt)
    preset: str  # our preset with exactly the released architecture

    @property
    def manifest_key(self) -> str:
        return self.file.removesuffix(".pt")


RELEASED_MODELS: dict[str, ReleasedModel] = {
    m.name: m
    for m in (
        ReleasedModel("glide-base", "base.pt", "glide-base"),
        ReleasedModel("glide-upsample", "upsample.pt", "glide-upsample"),
        ReleasedModel("glide-base-inpaint", "base_inpaint.pt", "glide-base-inpaint"),
        ReleasedModel("glide-upsample-inpaint", "upsample_inpaint.pt", "glide-upsample-inpaint"),
    )
}

# pipeline name -> (base name, upsampler name)
PIPELINES: dict[str, tuple[str, str]] = {
    "glide": ("glide-base", "glide-upsample"),
    "glide-inpaint": ("glide-base-inpaint", "glide-upsample-inpaint"),
}


def is_model_name(text: str) -> bool:
    """True for a single released model's name (glide-base, ...)."""
    return text in RELEASED_MODELS


def is_pipeline_name(text: str) -> bool:
    return text in PIPELINES


def all_names() -> list[str]:
    return [*RELEASED_MODELS, *PIPELINES]


def released_model(name: str) -> ReleasedModel:
    if name not in RELEASED_MODELS:
        if name in PIPELINES:
            base, up = PIPELINES[name]
            raise HubError(f"{name!r} is a pipeline ({base} + {up}); this takes one model, e.g. {base}")
        raise HubError(f"unknown model name {name!r}; known names: {', '.join(all_names())}")
    return RELEASED_MODELS[name]


def expand_names(names: list[str]) -> list[str]:
    """Single-model names for a list of model and pipeline names, in order, without repeats."""
    out: list[str] = []
    for name in names:
        parts = PIPELINES.get(name, (name,))
        for part in parts:
            released_model(part)  # raises for an unknown name
            if part not in out:
                out.append(part)
    return out


def release_base_url() -> str:
    url = os.environ.get(URL_ENV, "").strip() or RELEASE_URL
    return url if url.endswith("/") else url + "/"


def download_url(name: str) -> str:
    return release_base_url() + released_model(name).file
