"""The identity of a base model: what every derived artefact (a KV cache, an adapter) records."""

from __future__ import annotations

from typing import Literal

from memos_ray.types.base import Strict

Backend = Literal["transformers", "vllm"]


class ModelIdentity(Strict):
    name: str
    file_sha256: str
    dtype: str
    backend: Backend = "transformers"  # the engine's kernels and KV layout: a cache made by one never serves the other

    @property
    def key(self) -> str:
        return f"{self.name}@{self.file_sha256[:12]}:{self.dtype}:{self.backend}"
