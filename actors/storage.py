"""Storage actors: each owns one shard (a milvus-lite file of many cubes, or a connection to the server)
and is the only process that opens it, named ``memos_storage:<k>``.

Cube actors import no storage client: a cube's rows go to its shard's actor through
:class:`~actors.rows.ShardRows`, so
a cube actor's process holds its index and nothing of pymilvus, pandas or pyarrow (~100 MiB and ~0.5 s of
imports each, before). A storage actor is a plain threaded actor with one thread: calls on a shard run one
at a time, each a milvus-lite call that is durable when it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from actors.calls import actor_class
from memos_ray.config import MemosConfig
from memos_ray.plaintext.rows import Counters
from memos_ray.types import MemoryItem, PendingCascade

if TYPE_CHECKING:
    from memos_ray.plaintext.storage import CubeStore

# Imported where the actor runs, not at module import: a process that only holds a handle to a storage
# actor (a cube actor) imports this module to deserialize the handle, and must not pay for pymilvus.


class StorageHost:
    """One shard and the cubes of it that are open (live somewhere)."""

    def __init__(self, config: MemosConfig, index: int) -> None:
        self.config = config
        self.index = index
        from memos_ray.plaintext.storage import Shard

        self.shard = Shard(config.storage, index)
        self.cubes: dict[str, CubeStore] = {}

    def ready(self) -> int:
        return self.index

    def _store(self, cube_id: str) -> CubeStore:
        store = self.cubes.get(cube_id)
        if store is None:  # also after a restart of this actor: a live cube's next call opens it again
            store = self.cubes[cube_id] = self.shard.open_cube(cube_id, self.config.embedder.dim)
        return store

    def open(self, cube_id: str) -> Counters:
        """Open the cube's table (finishing a purge's rewrite that a crash left pending)."""
        return self._store(cube_id).state

    def load(self, cube_id: str, after_seq: int | None) -> tuple[list[MemoryItem], dict[str, np.ndarray]]:
        return self._store(cube_id).load(after_seq)

    def write(self, cube_id: str, items: list[MemoryItem], vecs: np.ndarray) -> None:
        self._store(cube_id).write(items, vecs)

    def erase(
        self,
        cube_id: str,
        pks: list[str],
        scrubbed: list[str],
        kept: list[MemoryItem],
        vecs: dict[str, np.ndarray],
        seq: int,
    ) -> Counters:
        store = self._store(cube_id)
        store.erase(pks, scrubbed, kept, vecs, seq)
        return store.state

    def set_cascades(self, cube_id: str, items: list[PendingCascade]) -> None:
        """The cube's cascade outbox, replaced whole (durable when it returns)."""
        self._store(cube_id).set_cascades(items)

    def cascades(self, cube_id: str) -> list[PendingCascade]:
        """What the cube's outbox holds (read from its counters: the cube need not be open)."""
        store = self.cubes.get(cube_id)
        counters = store.state if store is not None else self.shard.counters_of(cube_id)
        return counters.cascades if counters is not None else []

    def pending_cascades(self) -> list[str]:
        """The cubes of this shard whose outbox holds something."""
        return self.shard.pending_cascades()

    def flush(self, cube_id: str) -> None:
        self._store(cube_id).flush()

    def close(self, cube_id: str, clean_seq: int | None = None) -> None:
        """The cube passivated (with a checkpoint at ``clean_seq``): flushed, and out of this actor's memory."""
        store = self.cubes.pop(cube_id, None)
        if store is not None:
            store.close(clean_seq)

    def destroy(self, cube_id: str) -> None:
        self.close(cube_id)
        self.shard.open_cube(cube_id, self.config.embedder.dim).destroy()

    def shutdown(self) -> None:
        for cube_id in list(self.cubes):
            self.close(cube_id)
        self.shard.close()


StorageActor = actor_class(StorageHost, max_restarts=-1, max_task_retries=0, max_concurrency=1)


__all__ = ["StorageActor", "StorageHost"]
