"""OpenAI's released GLIDE weights by name: fetched once, verified, converted to model folders, cached, reused.

    from finetune.hub import ensure_model
    folder = ensure_model("glide-base")   # a model folder, downloaded and converted on first use

Names: `glide-base`, `glide-upsample`, `glide-base-inpaint`, `glide-upsample-inpaint`; pipelines `glide` and
`glide-inpaint`. Environment: AUTOCOMICS_CACHE (cache folder), AUTOCOMICS_OFFLINE=1 (no network),
AUTOCOMICS_GLIDE_URL (a mirror of the release folder), AUTOCOMICS_GLIDE_MANIFEST (facts of other checkpoints).
"""

from __future__ import annotations

from .cache import (
    CACHE_ENV,
    OFFLINE_ENV,
    FetchResult,
    cache_report,
    cache_root,
    cached_model_dir,
    default_cache_dir,
    ensure_model,
    fetch_model,
    is_offline,
    list_cached_models,
    no_downloads,
    remove_cached_model,
)
from .errors import HubError, OfflineError
from .names import (
    PIPELINES,
    RELEASED_MODELS,
    URL_ENV,
    all_names,
    download_url,
    expand_names,
    is_model_name,
    is_pipeline_name,
    released_model,
)

__all__ = [
    "CACHE_ENV",
    "OFFLINE_ENV",
    "PIPELINES",
    "RELEASED_MODELS",
    "URL_ENV",
    "FetchResult",
    "HubError",
    "OfflineError",
    "all_names",
    "cache_report",
    "cache_root",
    "cached_model_dir",
    "default_cache_dir",
    "download_url",
    "ensure_model",
    "expand_names",
    "fetch_model",
    "is_model_name",
    "is_offline",
    "is_pipeline_name",
    "list_cached_models",
    "no_downloads",
    "released_model",
    "remove_cached_model",
]
