"""One Ray actor per MemCube, named ``memcube:<id>`` in the memos namespace.

A thin shell over :class:`memos_ray.cube.MemCube`, holding the cube's index in its own
process. It is an asyncio actor so that change-feed subscribers can wait in it
(``wait_changes``) without blocking it; every other method is synchronous code that runs to
completion on the event loop, one at a time, so state changes need no locks. Restarted by
Ray after a crash (``max_restarts=-1``), it reloads everything from durable storage; the
Directory passivates it (``passivate`` flushes and releases the file) and reactivates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import ray

from memos_ray.config import MemosConfig
from memos_ray.errors import Unavailable
from memos_ray.plaintext.cube import MemCube
from memos_ray.types import (
    ChangeBatch,
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


def _passivated(cube_id: str) -> Unavailable:
    return Unavailable(f"cube {cube_id} was passivated", {"retry": True})


def _open(method: F) -> F:
    """Calls that arrive after passivation fail with Unavailable: the caller reactivates and retries.
    The wrapper is a coroutine (this is an asyncio actor); the method itself never awaits."""

    @functools.wraps(method)
    async def wrapper(self: MemCubeActor, *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            raise _passivated(self.cube.meta.id)
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _changes(method: F) -> F:
    """A method that changes the cube wakes the change-feed subscribers waiting in ``wait_changes``."""

    @functools.wraps(method)
    def wrapper(self: MemCubeActor, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            self._wake()

    return wrapper  # type: ignore[return-value]


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=1000)
class MemCubeActor:
    def __init__(self, meta: CubeMeta, config: MemosConfig) -> None:
        start = time.perf_counter()
        self.cube = MemCube(meta, config.storage, config.search, config.embedder.dim)
        self.load_s = time.perf_counter() - start
        self.closed = False
        self._changed: asyncio.Event | None = None

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_changes(self, after_seq: int | None, timeout_s: float, limit: int = 1_000) -> ChangeBatch:
        """Changes after ``after_seq`` (None: from now on), waiting up to ``timeout_s`` for the first."""
        deadline = time.monotonic() + timeout_s
        after = self.cube.seq if after_seq is None else after_seq
        while True:
            if self.closed:
                raise _passivated(self.cube.meta.id)
            events = self.cube.changes_after(after, limit)
            left = deadline - time.monotonic()
            if events or left <= 0:
                return ChangeBatch(events=events, seq=events[-1].seq if events else max(after, self.cube.seq))
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    @_open
    def ready(self) -> CubeMeta:
        return self.cube.live_meta()

    @_open
    def meta(self) -> CubeMeta:
        return self.cube.live_meta()

    @_open
    @_changes
    def add(
        self, items: list[MemoryCreate], vecs: np.ndarray, author: str, redactions: list[dict[str, int]] | None = None
    ) -> list[MemoryItem]:
        return self.cube.add(items, vecs, author, redactions)

    @_open
    def get(self, memory_id: str, version: int | None = None) -> MemoryItem:
        return self.cube.get(memory_id, version)

    @_open
    def list(
        self, offset: int, limit: int, states: list[LifecycleState], kinds: list[MemoryKind], tag: str | None
    ) -> MemoryList:
        return self.cube.page(offset, limit, states, kinds, tag)

    @_open
    @_changes
    def update(
        self,
        memory_id: str,
        patch: MemoryUpdate,
        vec: np.ndarray | None,
        author: str,
        redactions: dict[str, int] | None = None,
    ) -> MemoryItem:
        return self.cube.update(memory_id, patch, vec, author, redactions)

    @_open
    @_changes
    def delete(self, memory_id: str, expected_version: int | None, author: str) -> MemoryItem:
        return self.cube.delete(memory_id, expected_version, author)

    @_open
    @_changes
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
    def set_meta(self, meta: CubeMeta) -> None:
        """The Directory changed the cube's owner, grants or quotas."""
        self.cube.meta = meta

    @_open
    @_changes
    def passivate(self) -> CubeMeta:
        """Flush, release the storage file, and report final counters; the Directory then kills us."""
        meta = self.cube.live_meta()
        self.closed = True
        self.cube.close()
        return meta

    @_open
    def destroy(self) -> None:
        self.cube.destroy()
