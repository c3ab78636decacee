"""A cube actor's way to its rows: the proxy to its shard's storage actor (``actors/storage.py``).

Imports nothing of Milvus, so neither does a cube actor's process.
"""

from __future__ import annotations

import numpy as np
from ray.actor import ActorHandle

from actors.calls import blocking
from actors.storage import StorageHost
from memos_ray.config import MemosConfig
from memos_ray.errors import Unavailable
from memos_ray.plaintext.rows import Counters, shard_of
from memos_ray.types import MemoryItem, PendingCascade

STORAGE_NAME = "memos_storage"


def storage_actor_name(index: int) -> str:
    return f"{STORAGE_NAME}:{index}"


def storage_name(config: MemosConfig, cube_id: str) -> str:
    """The name of the storage actor of ``cube_id``'s shard (the Directory starts them)."""
    return storage_actor_name(shard_of(cube_id, config.storage.shards))


class ShardRows:
    """A cube's :class:`~memos_ray.plaintext.rows.CubeRows` in its shard's actor.

    Synchronous on purpose: a cube's state changes run to completion on its actor's event loop, one at a
    time, and a write is acknowledged only once its row is durable; a blocking call keeps both true without
    locks. A storage call takes ~1 ms; reads never reach it (the index is in the cube's memory).
    """

    def __init__(self, storage: ActorHandle | None, cube_id: str) -> None:
        if storage is None:
            raise Unavailable(f"the storage of cube {cube_id} is not running", {"cube_id": cube_id})
        self.storage = storage
        self.cube_id = cube_id
        self.state: Counters = blocking(storage, StorageHost.open, cube_id)

    def write(self, items: list[MemoryItem], vecs: np.ndarray) -> None:
        blocking(self.storage, StorageHost.write, self.cube_id, items, vecs)

    def load(self, after_seq: int | None) -> tuple[list[MemoryItem], dict[str, np.ndarray]]:
        items, vecs = blocking(self.storage, StorageHost.load, self.cube_id, after_seq)
        return items, {k: np.array(v) for k, v in vecs.items()}  # Ray's buffers are read-only

    def erase(
        self, pks: list[str], scrubbed: list[str], kept: list[MemoryItem], vecs: dict[str, np.ndarray], seq: int
    ) -> None:
        self.state = self.state.model_copy(update={"rewrite_pending": True})  # until the shard says it is done
        self.state = blocking(self.storage, StorageHost.erase, self.cube_id, pks, scrubbed, kept, vecs, seq)

    def set_cascades(self, items: list[PendingCascade]) -> None:
        blocking(self.storage, StorageHost.set_cascades, self.cube_id, items)
        self.state = self.state.model_copy(update={"cascades": list(items)})

    def flush(self) -> None:
        blocking(self.storage, StorageHost.flush, self.cube_id)

    def close(self, clean_seq: int | None = None) -> None:
        blocking(self.storage, StorageHost.close, self.cube_id, clean_seq)

    def destroy(self) -> None:
        blocking(self.storage, StorageHost.destroy, self.cube_id)


__all__ = ["STORAGE_NAME", "ShardRows", "storage_actor_name", "storage_name"]
