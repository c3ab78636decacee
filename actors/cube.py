"""One Ray actor per MemCube, named ``memcube:<id>`` in the memos namespace.

A thin shell over :class:`memos_ray.cube.MemCube`: the actor runs one call at a time
(state changes need no locks) and holds the cube's index in its own process. Restarted by
Ray after a crash (``max_restarts=-1``), it reloads everything from durable storage; the
Directory passivates it (``passivate`` flushes and releases the file) and reactivates it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import ray

from memos_ray.config import MemosConfig
from memos_ray.cube import MemCube
from memos_ray.errors import Unavailable
from memos_ray.models import (
    CubeMeta,
    LifecycleState,
    MemoryCreate,
    MemoryItem,
    MemoryKind,
    MemoryList,
    MemoryUpdate,
    SearchHit,
    SearchQuery,
)

F = TypeVar("F", bound=Callable[..., Any])


def cube_actor_name(cube_id: str) -> str:
    return f"memcube:{cube_id}"


def _open(method: F) -> F:
    """Calls that arrive after passivation fail with Unavailable: the caller reactivates and retries."""

    @functools.wraps(method)
    def wrapper(self: MemCubeActor, *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            raise Unavailable(f"cube {self.cube.meta.id} was passivated", {"retry": True})
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@ray.remote(max_restarts=-1, max_task_retries=0)
class MemCubeActor:
    def __init__(self, meta: CubeMeta, config: MemosConfig) -> None:
        start = time.perf_counter()
        self.cube = MemCube(meta, config.storage, config.search, config.embedder.dim)
        self.load_s = time.perf_counter() - start
        self.closed = False

    @_open
    def ready(self) -> CubeMeta:
        return self.cube.live_meta()

    @_open
    def meta(self) -> CubeMeta:
        return self.cube.live_meta()

    @_open
    def add(self, items: list[MemoryCreate], vecs: np.ndarray, author: str) -> list[MemoryItem]:
        return self.cube.add(items, vecs, author)

    @_open
    def get(self, memory_id: str, version: int | None = None) -> MemoryItem:
        return self.cube.get(memory_id, version)

    @_open
    def list(
        self, offset: int, limit: int, states: list[LifecycleState], kinds: list[MemoryKind], tag: str | None
    ) -> MemoryList:
        return self.cube.page(offset, limit, states, kinds, tag)

    @_open
    def update(self, memory_id: str, patch: MemoryUpdate, vec: np.ndarray | None, author: str) -> MemoryItem:
        return self.cube.update(memory_id, patch, vec, author)

    @_open
    def delete(self, memory_id: str, expected_version: int | None, author: str) -> MemoryItem:
        return self.cube.delete(memory_id, expected_version, author)

    @_open
    def purge(self, memory_id: str) -> None:
        self.cube.purge(memory_id)

    @_open
    def history(self, memory_id: str) -> list[MemoryItem]:
        return self.cube.versions(memory_id)

    @_open
    def search(self, q: SearchQuery, qvec: np.ndarray | None) -> list[SearchHit]:
        return self.cube.search(q, qvec)

    @_open
    def stats(self) -> dict[str, Any]:
        return {"cube_id": self.cube.meta.id, "memories": len(self.cube.latest), "load_s": self.load_s}

    @_open
    def passivate(self) -> CubeMeta:
        """Flush, release the storage file, and report final counters; the Directory then kills us."""
        meta = self.cube.live_meta()
        self.closed = True
        self.cube.close()
        return meta

    @_open
    def destroy(self) -> None:
        self.cube.destroy()
