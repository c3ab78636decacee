"""What a cube asks of its durable rows, wherever they live.

:class:`~memos_ray.plaintext.cube.MemCube` talks to a :class:`CubeRows`: in a server, the cube's
storage actor holds the Milvus client and the cube actor reaches it through a thin proxy (so a cube
actor imports no storage client); in a test or a tool, :class:`~memos_ray.plaintext.storage.CubeStore`
itself. Nothing here imports Milvus.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np
from pydantic import Field

from memos_ray.types import MemoryItem, PendingCascade, Strict


class Counters(Strict):
    """A cube's small durable numbers, one row of its shard's counters table."""

    seq_floor: int = 0  # the seq of the last purge: seqs are never reused, even of erased rows
    generation: int = 0  # which collection holds the memories (each rewrite makes the next)
    rewrite_pending: bool = False  # set before a purge rewrites, cleared once the new table holds everything
    erase: list[str] = Field(default_factory=list)  # the rows a pending rewrite leaves out (ids only: no text)
    scrub: list[str] = Field(default_factory=list)  # the rows whose context a pending rewrite clears
    # set by a passivation that wrote a checkpoint at this seq, cleared before the next row is written: while
    # it matches a checkpoint, no row exists after it and activation reads no table at all
    clean_seq: int | None = None
    # the cube's cascade outbox: changes whose consequences outside the cube (KV caches, adapters) are not all
    # done yet (ids only), kept with the rows so that whichever node runs the cube next finishes them
    cascades: list[PendingCascade] = Field(default_factory=list)


def shard_of(cube_id: str, shards: int) -> int:
    """Which shard holds a cube: stable across restarts and processes (not Python's salted hash)."""
    return int(hashlib.sha1(cube_id.encode()).hexdigest()[:8], 16) % shards


def row_key(memory_id: str, version: int) -> str:
    """A version's primary key: ``memory_id@version``, zero-padded so keys sort by version."""
    return f"{memory_id}@{version:010d}"


class CubeRows(Protocol):
    """A cube's versions, one durable row each, and its counters."""

    state: Counters

    def write(self, items: list[MemoryItem], vecs: np.ndarray) -> None:
        """Durable when it returns."""

    def load(self, after_seq: int | None) -> tuple[list[MemoryItem], dict[str, np.ndarray]]:
        """Every version written after ``after_seq`` (None: all), and the vector of each memory's latest one."""

    def erase(
        self, pks: list[str], scrubbed: list[str], kept: list[MemoryItem], vecs: dict[str, np.ndarray], seq: int
    ) -> None:
        """Leave no trace of the rows ``pks`` (and the contexts of ``scrubbed``) in any file."""

    def set_cascades(self, items: list[PendingCascade]) -> None:
        """The cube's cascade outbox, replaced whole; durable when it returns."""

    def flush(self) -> None: ...

    def close(self, clean_seq: int | None = None) -> None:
        """Flush and release: the cube is passivating (``clean_seq``: the seq of the checkpoint it wrote)."""

    def destroy(self) -> None:
        """Remove every row of the cube."""
