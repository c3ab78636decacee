"""The identity of a base model: what every derived artefact (a KV cache, an adapter) records."""

from __future__ import annotations

from memos_ray.types.base import Strict


class ModelIdentity(Strict):
    name: str
    file_sha256: str
    dtype: str

    @property
    def key(self) -> str:
        return f"{self.name}@{self.file_sha256[:12]}:{self.dtype}"
