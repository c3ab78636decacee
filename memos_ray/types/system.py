"""Health and cluster status."""

from __future__ import annotations

from memos_ray.types.base import (
    Strict,
)


class Health(Strict):
    status: str
    version: str


class DirectoryStats(Strict):
    cubes: int
    live: int
    max_live: int
    activations: int
    passivations: int
    activation_p50_s: float | None
    activation_max_s: float | None


class EmbedderStats(Strict):
    requests: int
    sentences: int
    batches: int
    mean_batch: float
    busy_s: float


class Status(Strict):
    version: str
    directory: DirectoryStats
    embedder: EmbedderStats
