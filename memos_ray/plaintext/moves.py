"""A cube's lifecycle moves, each written as new versions (ids never change, never vanish): ingest dedup,
supersession with time validity, restore, and the sweep that expires, archives and merges under the cube's
:class:`LifecyclePolicy` (the plan is :mod:`memos_ray.plaintext.lifecycle`'s). A base of
:class:`memos_ray.plaintext.cube.MemCube`, which holds the versions and writes them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from memos_ray.errors import Conflict, InvalidInput
from memos_ray.plaintext import lifecycle
from memos_ray.plaintext.index import HybridIndex
from memos_ray.types import CubeMeta, LifecyclePolicy, LifecycleState, LifecycleSweep, MemoryItem


class _NextVersion(Protocol):
    def __call__(
        self,
        cur: MemoryItem,
        author: str,
        changes: dict[str, object],
        redactions: dict[str, int] | None = None,
        seq: int | None = None,
    ) -> MemoryItem: ...


class LifecycleMoves:
    meta: CubeMeta
    default_policy: LifecyclePolicy
    latest: dict[str, MemoryItem]
    history: dict[str, list[MemoryItem]]
    _vecs: dict[str, np.ndarray]
    seq: int
    index: HybridIndex

    # written by MemCube, which holds the versions: a move only decides what the next versions are
    _commit: Callable[[list[MemoryItem], np.ndarray], None]
    _next_version: _NextVersion

    @property
    def policy(self) -> LifecyclePolicy:
        return self.meta.lifecycle or self.default_policy

    # ------------------------------------------------------------ ingest dedup

    def _dedup(self, drafts: list[MemoryItem], vecs: np.ndarray) -> list[MemoryItem | None]:
        """For each draft, the memory that stands for it (None: store it)."""
        threshold = self.policy.dedup_threshold
        if threshold is None:
            return [None] * len(drafts)
        out: list[MemoryItem | None] = []
        kept: list[tuple[MemoryItem, np.ndarray]] = []
        for draft, vec in zip(drafts, vecs, strict=True):
            match: MemoryItem | None = None
            if not draft.supersedes:  # a replacement is meant to be stored
                best = self.index.closest(vec, draft)
                if best is not None and best[1] >= threshold:
                    match = self.latest[best[0]]
                for earlier, evec in kept:
                    same = (earlier.kind, (earlier.provenance.speaker or "").lower()) == (
                        draft.kind,
                        (draft.provenance.speaker or "").lower(),
                    )
                    cos = float(evec @ vec) / max(float(np.linalg.norm(evec) * np.linalg.norm(vec)), 1e-12)
                    if match is None and same and cos >= threshold:
                        match = earlier
            out.append(match)
            if match is None:
                kept.append((draft, vec))
        return out

    # ------------------------------------------------------------ supersession and restore

    def _check_supersedes(self, ids: Sequence[str], own: str | None = None) -> None:
        """Every memory to supersede is in this cube and not deleted (checked before anything is written)."""
        for memory_id in ids:
            old = self.latest.get(memory_id)
            if memory_id == own:
                raise InvalidInput(f"memory {memory_id} cannot supersede itself", {"supersedes": memory_id})
            if old is None:
                raise InvalidInput(
                    f"memory {memory_id} named in supersedes is not in cube {self.meta.id}", {"supersedes": memory_id}
                )
            if old.state == LifecycleState.deleted:
                raise Conflict(f"memory {memory_id} is deleted; it cannot be superseded", {"supersedes": memory_id})

    def _supersede(self, new: MemoryItem, old_ids: Sequence[str], author: str) -> None:
        """The old facts leave default search and their validity closes when the new one starts holding (its
        valid_from, else when it was said, else now)."""
        closes = new.valid_from or new.said_at or new.updated_at
        versions = []
        for k, memory_id in enumerate(old_ids):
            old = self.latest[memory_id]
            valid_to = old.valid_to if old.valid_to is not None and old.valid_to <= closes else closes
            if old.valid_from is not None and valid_to < old.valid_from:
                valid_to = old.valid_from
            versions.append(
                self._next_version(
                    old,
                    author,
                    {"state": LifecycleState.superseded, "superseded_by": new.id, "valid_to": valid_to},
                    seq=self.seq + k + 1,
                )
            )
        self._commit(versions, np.stack([self._vecs[v.id] for v in versions]))

    def _restored(self, cur: MemoryItem) -> dict[str, object]:
        """What restoring ``cur`` to active changes: its links, and a superseded fact's validity as it was."""
        changes: dict[str, object] = {"merged_into": None, "superseded_by": None}
        if cur.state == LifecycleState.superseded:
            before = next((v for v in reversed(self.history[cur.id]) if v.state != LifecycleState.superseded), None)
            changes["valid_to"] = before.valid_to if before is not None else None
        return changes

    def _unlink(self, cur: MemoryItem, author: str) -> None:
        """A restored memory leaves the memory it was merged into, or the one that superseded it."""
        other_id = cur.merged_into or cur.superseded_by
        other = self.latest.get(other_id) if other_id else None
        if other is None or other.state == LifecycleState.deleted:
            return
        if cur.merged_into is not None:
            change: dict[str, object] = {"merged_from": [r for r in other.merged_from if r.memory_id != cur.id]}
        else:
            change = {"supersedes": [m for m in other.supersedes if m != cur.id]}
        version = self._next_version(other, author, change)
        self._commit([version], self._vecs[other.id][None, :])

    # ------------------------------------------------------------ the lifecycle sweep

    def sweep_lifecycle(
        self,
        used_at: dict[str, float],
        now: float,
        merge_after_seq: int,
        pinned_tag: str,
        author: str,
        before: Callable[[list[str]], None] | None = None,
    ) -> LifecycleSweep:
        """Expire, archive and merge under the cube's policy (:mod:`memos_ray.plaintext.lifecycle`), each move a
        new version written by ``author``: every id stays readable. ``merge_after_seq``: the seq up to which
        near-duplicates were already looked for. Clocks run from a memory's last write by anyone but ``author``
        (the policy's own moves renew nothing). ``before`` hears the ids that will change, before they do."""
        start = time.perf_counter()

        def written_at(m: MemoryItem) -> float:
            own = (v for v in reversed(self.history[m.id]) if v.provenance.author != author)
            return next(own, m).updated_at.timestamp()

        plan = lifecycle.plan(
            self.latest.values(),
            self._vecs,
            self.policy,
            used_at,
            now,
            merge_after_seq,
            pinned_tag,
            lambda m: any(v.state == LifecycleState.merged for v in self.history[m]),
            written_at,
            lambda m: self.history[m.id][0].seq,
            self.index.salience,
        )
        seq = self.seq
        versions: dict[str, MemoryItem] = {}

        def move(cur: MemoryItem, **changes: object) -> None:
            nonlocal seq
            seq += 1
            versions[cur.id] = self._next_version(cur, author, changes, seq=seq)

        for memory_id in plan.expire:
            move(self.latest[memory_id], state=LifecycleState.expired)
        for memory_id in plan.archive:
            move(self.latest[memory_id], state=LifecycleState.archived)
        into: dict[str, list[str]] = {}
        for dup, survivor in plan.merge.items():
            move(self.latest[dup], state=LifecycleState.merged, merged_into=survivor)
            into.setdefault(survivor, []).append(dup)
        for survivor, dups in into.items():
            cur = self.latest[survivor]
            tags = list(dict.fromkeys([*cur.tags, *(t for d in dups for t in self.latest[d].tags)]))
            refs = [*cur.merged_from, *(self.latest[d].ref for d in dups)]
            move(cur, merged_from=refs, tags=tags)
        if versions:
            if before is not None:
                before(list(versions))
            items = sorted(versions.values(), key=lambda v: v.seq)
            self._commit(items, np.stack([self._vecs[v.id] for v in items]))
        return LifecycleSweep(
            cube_id=self.meta.id,
            expired=plan.expire,
            archived=plan.archive,
            merged=plan.merge,
            checked=plan.checked,
            merge_seq=self.seq if self.policy.merge_threshold is not None else merge_after_seq,
            seq=self.seq,
            next_due=plan.next_due,
            took_ms=round((time.perf_counter() - start) * 1000, 2),
        )
