"""Optional CLIP rerank: score candidate images against their caption with open_clip and keep the best.

Weights are only ever read from disk (an explicit file, $AUTOCOMICS_CLIP_WEIGHTS, or a copy that
open_clip / the Hugging Face cache already holds); nothing is downloaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from data_pipeline.errors import UserError

WEIGHTS_ENV = "AUTOCOMICS_CLIP_WEIGHTS"
DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class RerankUnavailable(UserError, RuntimeError):
    """CLIP rerank was asked for but cannot run here (no local weights, unknown model)."""


def _register_model(model: str) -> str:
    """A model name, or a path to an open_clip model config JSON (registered under its file stem)."""
    import open_clip  # lazy: open_clip (and torchvision) take seconds to import; only --candidates > 1 needs them

    if model.endswith(".json"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise RerankUnavailable(f"CLIP model config {path} does not exist")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models():
        raise RerankUnavailable(
            f"unknown open_clip model {model!r}; see open_clip.list_models(), or pass a config .json"
        )
    return model


def find_local_weights(model: str, pretrained: str | None) -> Path | None:
    """Weights for (model, pretrained tag) already on this machine, without touching the network."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    if not pretrained:
        return None
    import open_clip  # lazy: open_clip (and torchvision) take seconds to import; only --candidates > 1 needs them

    cfg = open_clip.get_pretrained_cfg(model, pretrained) or {}
    hub = (cfg.get("hf_hub") or "").strip("/")
    if hub:
        from huggingface_hub import try_to_load_from_cache  # lazy: open_clip's dependency, loaded with it

        for filename in _WEIGHT_FILES:
            found = try_to_load_from_cache(hub, filename)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = cfg.get("url") or ""
    if url:  # open_clip's own download cache
        cached = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip" / Path(url).name
        if cached.is_file():
            return cached
    return None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise RerankUnavailable(f"{path} does not hold a CLIP state_dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


class ClipReranker:
    """Scores images against a caption (cosine similarity of open_clip embeddings, x100)."""

    def __init__(
        self,
        model: str = DEFAULT_CLIP_MODEL,
        weights: str | os.PathLike | None = None,
        pretrained: str | None = DEFAULT_CLIP_PRETRAINED,
        device: torch.device | str = "cpu",
    ):
        import open_clip  # lazy: open_clip (and torchvision) take seconds to import; only --candidates > 1 needs them

        name = _register_model(model)
        path = Path(weights).expanduser() if weights else find_local_weights(name, pretrained)
        if path is None:
            raise RerankUnavailable(
                f"CLIP rerank needs local weights for {name} and none were found (nothing is downloaded): "
                f"pass --clip-weights FILE (open_clip .safetensors/.bin) or set {WEIGHTS_ENV}"
            )
        if not path.is_file():
            raise RerankUnavailable(f"CLIP weights {path} do not exist")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # open_clip warns that it built random weights; ours are loaded next
        try:
            self.model = open_clip.create_model(name, pretrained=None, device="cpu")
        finally:
            root.setLevel(level)
        try:
            self.model.load_state_dict(_read_state_dict(path), strict=True)
        except RuntimeError as exc:
            raise RerankUnavailable(f"{path} does not fit CLIP model {name}: {str(exc).splitlines()[0]}") from None
        self.device = torch.device(device)
        self.model.to(self.device).eval().requires_grad_(False)
        visual = self.model.visual
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        self.preprocess = open_clip.image_transform(
            visual.image_size, is_train=False, mean=cfg.get("mean"), std=cfg.get("std")
        )
        try:
            self.tokenizer = open_clip.get_tokenizer(name)
        except Exception as exc:  # tokenizers fetched from a hub fail offline in several ways
            raise RerankUnavailable(f"the tokenizer of CLIP model {name} is not available offline: {exc}") from None
        self.name, self.weights = name, path

    @torch.no_grad()
    def scores(self, images: list[Image.Image], caption: str) -> list[float]:
        pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        image_features = self.model.encode_image(pixels).float()
        text_features = self.model.encode_text(self.tokenizer([caption]).to(self.device)).float()
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return (100.0 * image_features @ text_features.T).squeeze(1).tolist()

    def best(self, images: list[Image.Image], caption: str) -> tuple[int, list[float]]:
        scores = self.scores(images, caption)
        return max(range(len(scores)), key=scores.__getitem__), scores
