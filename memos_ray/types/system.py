"""Health and cluster status."""

from __future__ import annotations

from pydantic import Field

from memos_ray.types.base import (
    Strict,
)
from memos_ray.types.scheduling import SchedulerStatus


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
    spares: int = Field(0, description="cube actors started with nothing loaded, ready to open a cube")


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
    scheduler: SchedulerStatus | None = Field(
        None, description="what lives where and the budgets used; None until the first chat starts the workers"
    )
