"""A cube's versions in bulk, for portable bundles: every version of every memory out (an export), and whole
version histories in under given ids (an import), through the cube's write path: durable rows first, then
the versions in memory, the index and the change feed. A base of :class:`memos_ray.plaintext.cube.MemCube`.

An import refuses (409) ids the cube holds already, never overwriting one: importing the same bundle into
the same cube twice (its ids are derived from the bundle, see :mod:`memos_ray.bundles.mapping`) is a repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from memos_ray.errors import Conflict, InvalidInput
from memos_ray.plaintext.rows import CubeRows
from memos_ray.types import ChangeEvent, CubeMeta, LifecycleState, MemoryItem


def version_histories(items: Sequence[MemoryItem], cube_id: str) -> dict[str, list[MemoryItem]]:
    """Each memory's versions in order; refused (422) unless each memory has exactly versions 1..n of
    ``cube_id`` (a purge takes every version of a memory: there are no gaps to keep)."""
    histories: dict[str, list[MemoryItem]] = {}
    for item in items:
        if item.cube_id != cube_id:
            raise InvalidInput(f"memory {item.id} is of cube {item.cube_id}, not {cube_id}", {"memory_id": item.id})
        histories.setdefault(item.id, []).append(item)
    for memory_id, versions in histories.items():
        versions.sort(key=lambda v: v.version)
        if [v.version for v in versions] != list(range(1, len(versions) + 1)):
            raise InvalidInput(
                f"memory {memory_id}: its versions must be 1 to {len(versions)}, each once", {"memory_id": memory_id}
            )
    return histories


class VersionTransfer:
    meta: CubeMeta
    dim: int
    latest: dict[str, MemoryItem]
    history: dict[str, list[MemoryItem]]
    _vecs: dict[str, np.ndarray]
    seq: int
    store: CubeRows

    # MemCube's: the quota check, indexing a latest version, and the change feed
    _check_quota: Callable[[int, int], None]
    _index: Callable[[MemoryItem, np.ndarray], None]
    _record: Callable[[ChangeEvent], None]
    _event: Callable[[MemoryItem], ChangeEvent]

    def all_versions(self) -> list[MemoryItem]:
        """Every version of every memory the cube holds, deleted and archived ones too (a purged memory is
        gone), in (id, version) order."""
        return [v for memory_id in sorted(self.history) for v in self.history[memory_id]]

    def held(self, memory_ids: Sequence[str]) -> list[str]:
        """Which of ``memory_ids`` the cube holds (in any state)."""
        return [m for m in memory_ids if m in self.latest]

    def import_versions(self, items: Sequence[MemoryItem], memory_ids: Sequence[str], vecs: np.ndarray) -> int:
        """Store whole version histories under their own ids, versions, states and provenance (each gets this
        cube's next seq, in the order of the seqs it came with); ``vecs[i]``: the embedding of ``memory_ids[i]``'s
        latest version (every row of it carries that one: only the latest's is ever read). Nothing is written
        unless all of it can be: 409 for an id the cube holds already, 429 over a quota. Returns the seq after."""
        histories = version_histories(items, self.meta.id)
        if sorted(histories) != sorted(memory_ids) or len(memory_ids) != len(vecs):
            raise InvalidInput(f"expected one vector per memory: {len(histories)}")
        if len(vecs) and vecs.shape[1] != self.dim:
            raise InvalidInput(f"expected vectors of dimension {self.dim}")
        held = self.held(memory_ids)
        if held:
            raise Conflict(
                f"cube {self.meta.id} already holds {len(held)} of these {len(memory_ids)} memories "
                f"({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}): nothing was imported",
                {"cube_id": self.meta.id, "memory_ids": held[:20], "held": len(held), "problem": "already_imported"},
            )
        alive = [h[-1] for h in histories.values() if h[-1].state != LifecycleState.deleted]
        self._check_quota(len(alive), sum(len(m.text.encode()) for m in alive))
        if not histories:
            return self.seq
        vec_of = dict(zip(memory_ids, vecs, strict=True))
        ordered = sorted((v for h in histories.values() for v in h), key=lambda v: (v.seq, v.version, v.id))
        rows = [v.model_copy(update={"seq": self.seq + k + 1}) for k, v in enumerate(ordered)]
        self.store.write(rows, np.stack([vec_of[v.id] for v in rows]))  # durable first
        for row in rows:
            self.history.setdefault(row.id, []).append(row)
            self._record(self._event(row))
        for memory_id in histories:
            self.history[memory_id].sort(key=lambda v: v.version)
            self.latest[memory_id] = self.history[memory_id][-1]
            self._vecs[memory_id] = vec_of[memory_id]
        for memory_id in histories:  # once every latest is in: a merged memory is indexed with its sources' contexts
            self._index(self.latest[memory_id], vec_of[memory_id])
        self.seq = rows[-1].seq
        return self.seq


__all__ = ["VersionTransfer", "version_histories"]
