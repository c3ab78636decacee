"""A MemCube's plaintext memory: versions, lifecycle, quotas and hybrid search.

Pure Python over :class:`CubeStore` (durable) and :class:`HybridIndex` (in memory), so it is
tested without Ray; ``actors/cube.py`` runs one of these per cube actor. Every change
writes the new version to storage first and only then updates memory and the index: an
acknowledged change is durable, and a failed write leaves the cube as it was.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Sequence

import numpy as np

from memos_ray.config import SearchConfig, StorageConfig
from memos_ray.errors import Conflict, InvalidInput, MemoryNotFound, QuotaExceeded, VersionConflict
from memos_ray.plaintext import erasure
from memos_ray.plaintext.checkpoint import CheckpointFiles
from memos_ray.plaintext.index import HybridIndex, TermRows
from memos_ray.plaintext.moves import LifecycleMoves
from memos_ray.plaintext.rows import CubeRows, row_key
from memos_ray.plaintext.transfer import VersionTransfer
from memos_ray.plaintext.words import WordNeighbours
from memos_ray.scheduling.policy import approx_tokens
from memos_ray.types import (
    RESTORABLE,
    Added,
    ChangeEvent,
    ChangeOp,
    CubeMeta,
    LifecyclePolicy,
    LifecycleState,
    MemoryCreate,
    MemoryItem,
    MemoryKind,
    MemoryList,
    MemoryUpdate,
    Provenance,
    Purged,
    Recall,
    SearchHit,
    SearchQuery,
    TrainRequest,
    WorkingSet,
    new_memory_id,
    utcnow,
)

CHANGE_RING = 10_000  # recent change events kept for the feed; older ones are rebuilt from the versions


def _text_bytes(text: str) -> int:
    return len(text.encode())


def _event(item: MemoryItem) -> ChangeEvent:
    if item.state == LifecycleState.deleted:
        op = ChangeOp.delete
    else:
        op = ChangeOp.add if item.version == 1 else ChangeOp.update
    return ChangeEvent(
        seq=item.seq,
        cube_id=item.cube_id,
        op=op,
        memory_id=item.id,
        version=item.version,
        author=item.provenance.author,
        at=item.updated_at,
        memory=item,
    )


class MemCube(LifecycleMoves, VersionTransfer):
    _event = staticmethod(_event)  # a version's change event, for the bulk import (VersionTransfer)

    def __init__(
        self,
        meta: CubeMeta,
        storage: StorageConfig,
        search: SearchConfig,
        dim: int,
        default_policy: LifecyclePolicy | None = None,
        store: CubeRows | None = None,
        words: WordNeighbours | None = None,
    ) -> None:
        """``store``: the cube's rows (a cube actor passes its storage actor's proxy); None opens them here.
        ``words``: the embedder's word-neighbour table, for query expansion (None: none)."""
        self.meta = meta
        self.dim = dim
        self.default_policy = default_policy or LifecyclePolicy()
        if store is None:
            from memos_ray.plaintext.storage import CubeStore  # imports pymilvus: only where rows are opened here

            store = CubeStore.local(storage, meta.id, dim)
        self.store: CubeRows = store
        self.checkpoint = CheckpointFiles(
            storage.data_dir / "cubes" / meta.id / "checkpoint" if storage.is_lite else None, meta.id
        )
        self.index = HybridIndex(dim, search, words=words)
        self.latest: dict[str, MemoryItem] = {}
        self.history: dict[str, list[MemoryItem]] = {}
        self._vecs: dict[str, np.ndarray] = {}
        self.working: list[str] = []  # the working set the MemScheduler picked (ids, in prefix order)
        self.seq = self.store.state.seq_floor
        self._load()
        self.changes: deque[ChangeEvent] = deque(maxlen=CHANGE_RING)
        self._ring_from = self.seq + 1  # every change from this seq on is in the ring (until it overflows)

    def _load(self) -> None:
        """The checkpoint, then the rows written after it. Python's cycle collector is paused meanwhile: a
        10k cube makes ~10^6 objects at once, and the collections they would trigger cost more than the
        load itself (measured: 390 ms → 100 ms to validate a 10k checkpoint)."""
        paused = gc.isenabled()
        gc.disable()
        try:
            self._read_all()
        finally:
            if paused:
                gc.enable()

    def _read_all(self) -> None:
        items: dict[tuple[str, int], MemoryItem] = {}
        vecs: dict[str, np.ndarray] = {}
        since = None
        saved = self.checkpoint.read(self.index.key)
        if saved is not None:
            since = saved.checkpoint.seq
            items = {(i.id, i.version): i for i in saved.checkpoint.items}
            vecs = {memory_id: saved.vectors[r] for r, memory_id in enumerate(saved.ids)}
        clean = since is not None and since == self.store.state.clean_seq  # nothing was written after it
        self._checkpointed = since if clean else None  # the seq the checkpoint on disk holds everything up to
        tail, tail_vecs = ([], {}) if clean else self.store.load(since)
        items.update({(i.id, i.version): i for i in tail})
        vecs.update(tail_vecs)  # a memory in the tail has its newest version there (seqs only grow)
        for item in sorted(items.values(), key=lambda i: (i.created_at, i.id, i.version)):
            self.history.setdefault(item.id, []).append(item)
            self.latest[item.id] = item
            self.seq = max(self.seq, item.seq)
        self._vecs = vecs
        cached = {} if saved is None or saved.terms is None else {memory_id: r for r, memory_id in enumerate(saved.ids)}
        for item in tail:  # changed since the checkpoint: tokenized again (with what it was merged into)
            cached.pop(item.id, None)
            if item.merged_into is not None:
                cached.pop(item.merged_into, None)
        latest = list(self.latest.values())
        matrix = np.stack([vecs[i.id] for i in latest]) if latest else np.zeros((0, self.dim), dtype=np.float32)
        rows = np.array([cached.get(i.id, -1) for i in latest], dtype=np.int64)
        terms = (
            saved.terms.take(rows) if saved is not None and saved.terms is not None else TermRows.of([{}] * len(latest))
        )
        self.index.load(latest, matrix, terms, self._merged_contexts)

    def _merged_contexts(self, item: MemoryItem) -> list[str]:
        merged = (self.latest.get(r.memory_id) for r in item.merged_from)
        return [m.context for m in merged if m is not None and m.context]

    def _index(self, item: MemoryItem, vec: np.ndarray) -> None:
        self.index.upsert(item, vec, self._merged_contexts(item))

    # ------------------------------------------------------------ counters

    def live_meta(self) -> CubeMeta:
        alive = [m for m in self.latest.values() if m.state != LifecycleState.deleted]
        return self.meta.model_copy(
            update={
                "seq": self.seq,
                "memory_count": len(alive),
                "text_bytes": sum(_text_bytes(m.text) for m in alive),
            }
        )

    def _check_quota(self, new_memories: int, new_bytes: int) -> None:
        quotas = self.meta.quotas
        if quotas.max_memories is None and quotas.max_bytes is None:
            return
        meta = self.live_meta()
        if quotas.max_memories is not None and new_memories and meta.memory_count + new_memories > quotas.max_memories:
            raise QuotaExceeded(
                f"cube {self.meta.id} holds {meta.memory_count} memories; "
                f"adding {new_memories} exceeds its quota of {quotas.max_memories}",
                {"quota": "max_memories", "limit": quotas.max_memories},
            )
        if quotas.max_bytes is not None and new_bytes > 0 and meta.text_bytes + new_bytes > quotas.max_bytes:
            raise QuotaExceeded(
                f"cube {self.meta.id} holds {meta.text_bytes} bytes of text; "
                f"adding {new_bytes} exceeds its quota of {quotas.max_bytes}",
                {"quota": "max_bytes", "limit": quotas.max_bytes},
            )

    # ------------------------------------------------------------ writes

    def _commit(self, items: list[MemoryItem], vecs: np.ndarray) -> None:
        """Durable first, then memory and index."""
        self.store.write(items, vecs)
        for item, vec in zip(items, vecs, strict=True):
            self.history.setdefault(item.id, []).append(item)
            self.latest[item.id] = item
            self._vecs[item.id] = vec
            self._index(item, vec)
            self._record(_event(item))
        self.seq = max(self.seq, max(i.seq for i in items))

    def add(
        self,
        new: Sequence[MemoryCreate],
        vecs: np.ndarray,
        author: str,
        redactions: Sequence[dict[str, int]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> Added:
        """``redactions``: per item, what the ingress masked (recorded in the provenance). With ingest dedup on,
        an item as close as the policy's threshold to an active memory of its kind and speaker (or to an
        earlier item of the batch) is not stored: the existing memory stands in its place. ``ids``: the ids
        to give them (a keyed request's, see ``keyed_memory_ids``); an id the cube holds already is a retry
        of an add it committed: that memory stands in, nothing is added again."""
        masked = list(redactions) if redactions is not None else [{} for _ in new]
        if len(new) != len(vecs) or len(masked) != len(new) or (len(vecs) and vecs.shape[1] != self.dim):
            raise InvalidInput(f"expected {len(new)} vectors of dimension {self.dim}")
        if ids is not None and len(ids) != len(new):
            raise InvalidInput(f"expected {len(new)} ids")
        for m in new:
            self._check_supersedes(m.supersedes)
        now = utcnow()
        drafts = [
            MemoryItem(
                id=ids[i] if ids is not None else new_memory_id(),
                cube_id=self.meta.id,
                version=1,
                text=m.text,
                context=m.context,
                kind=m.kind,
                tags=list(dict.fromkeys(m.tags)),
                metadata=m.metadata,
                provenance=Provenance(author=author, redactions=masked[i], **m.source.model_dump()),
                said_at=m.said_at,
                valid_from=m.valid_from,
                valid_to=m.valid_to,
                supersedes=list(dict.fromkeys(m.supersedes)),
                created_at=now,
                updated_at=now,
            )
            for i, m in enumerate(new)
        ]
        result: list[MemoryItem | None] = list(self._dedup(drafts, vecs))
        for i, memory_id in enumerate(ids or ()):
            if memory_id in self.latest:  # committed by the first try of this request
                result[i] = self.latest[memory_id]
        fresh = [i for i, r in enumerate(result) if r is None]
        self._check_quota(len(fresh), sum(_text_bytes(drafts[i].text) for i in fresh))
        items = [drafts[i].model_copy(update={"seq": self.seq + k + 1}) for k, i in enumerate(fresh)]
        if items:
            self._commit(items, vecs[fresh])
            for item in items:
                if item.supersedes:
                    self._supersede(item, item.supersedes, author)
        for k, i in enumerate(fresh):
            result[i] = items[k]
        return Added(  # the latest versions: a duplicate of an earlier item of the batch gets that item
            items=[self.latest[r.id] for r in result if r is not None],
            duplicates=[i for i in range(len(new)) if i not in fresh],
        )

    def _expect(self, cur: MemoryItem, expected_version: int | None) -> None:
        if expected_version is not None and expected_version != cur.version:
            raise VersionConflict(
                f"memory {cur.id} is at version {cur.version}, not {expected_version}",
                {"memory_id": cur.id, "current_version": cur.version},
            )

    def _current(self, memory_id: str) -> MemoryItem:
        item = self.latest.get(memory_id)
        if item is None:
            raise MemoryNotFound(f"memory {memory_id} not found in cube {self.meta.id}", {"memory_id": memory_id})
        return item

    def _next_version(
        self,
        cur: MemoryItem,
        author: str,
        changes: dict[str, object],
        redactions: dict[str, int] | None = None,
        seq: int | None = None,
    ) -> MemoryItem:
        """The source stays; the author and what was masked are this version's. ``changes``: model fields."""
        provenance = cur.provenance.model_copy(update={"author": author, "redactions": redactions or {}})
        return cur.model_copy(
            update={
                **changes,
                "version": cur.version + 1,
                "seq": self.seq + 1 if seq is None else seq,
                "updated_at": utcnow(),
                "provenance": provenance,
            }
        )

    def update(
        self,
        memory_id: str,
        patch: MemoryUpdate,
        vec: np.ndarray | None,
        author: str,
        redactions: dict[str, int] | None = None,
    ) -> MemoryItem:
        cur = self._current(memory_id)
        self._expect(cur, patch.expected_version)
        if cur.state == LifecycleState.deleted:
            raise Conflict(f"memory {memory_id} is deleted; it cannot be updated", {"memory_id": memory_id})
        # An explicit null means "no change", except for said_at, which may be cleared.
        changes = {
            k: v
            for k, v in patch.model_dump(exclude_unset=True, exclude={"expected_version"}).items()
            if v is not None or k in ("said_at", "valid_from", "valid_to")
        }
        if "text" in changes and changes["text"] != cur.text:
            if vec is None:
                raise InvalidInput("a new text needs its embedding")
            self._check_quota(0, _text_bytes(changes["text"]) - _text_bytes(cur.text))
        else:
            vec = self._vecs[memory_id]
        if "kind" in changes:
            changes["kind"] = MemoryKind(changes["kind"])
        if "state" in changes:
            changes["state"] = LifecycleState(changes["state"])
        if "tags" in changes:
            changes["tags"] = list(dict.fromkeys(changes["tags"]))
        added = [m for m in dict.fromkeys(changes.pop("supersedes", [])) if m not in cur.supersedes]
        self._check_supersedes(added, memory_id)
        if added:
            changes["supersedes"] = [*cur.supersedes, *added]
        restoring = changes.get("state") == LifecycleState.active and cur.state in RESTORABLE
        if restoring:  # what the caller sends wins over what the restore brings back
            changes = {**self._restored(cur), **changes}
        elif changes.get("state") == LifecycleState.archived and cur.state not in (
            LifecycleState.active,
            LifecycleState.archived,
        ):
            raise Conflict(
                f"memory {memory_id} is {cur.state.value}; only an active memory can be archived",
                {"memory_id": memory_id, "state": cur.state.value},
            )
        valid_from = changes.get("valid_from", cur.valid_from)
        valid_to = changes.get("valid_to", cur.valid_to)
        changed_validity = "valid_from" in changes or "valid_to" in changes
        if changed_validity and valid_from is not None and valid_to is not None and valid_to < valid_from:
            raise InvalidInput(
                f"memory {memory_id} would be valid to {valid_to} before it is valid from {valid_from}",
                {"memory_id": memory_id},
            )
        item = self._next_version(cur, author, changes, redactions)
        self._commit([item], vec[None, :])
        if restoring:
            self._unlink(cur, author)
        if added:
            self._supersede(item, added, author)
        return self.latest[memory_id]

    def delete(self, memory_id: str, expected_version: int | None, author: str) -> MemoryItem:
        """Soft delete: a new version in state ``deleted``; ``purge`` removes the rows."""
        cur = self._current(memory_id)
        self._expect(cur, expected_version)
        if cur.state == LifecycleState.deleted:
            return cur
        item = self._next_version(cur, author, {"state": LifecycleState.deleted})
        self._commit([item], self._vecs[memory_id][None, :])
        return item

    def purge(self, memory_id: str) -> Purged:
        """Erase a memory and what carries its text (:mod:`memos_ray.plaintext.erasure`): every version, from
        storage and from every file of it (irreversible)."""
        self._current(memory_id)
        ids = erasure.reach(self.latest, memory_id)
        erased = set(ids)
        texts = {v.text for i in ids for v in self.history[i]}
        scrubbed = [
            v.model_copy(update={"context": None})
            for m, versions in self.history.items()
            if m not in erased
            for v in versions
            if erasure.quotes(v.context, texts)
        ]
        pks = [row_key(i, v.version) for i in ids for v in self.history[i]]
        fixed = {(v.id, v.version): v for v in scrubbed}
        kept = [
            fixed.get((v.id, v.version), v) for m, versions in self.history.items() if m not in erased for v in versions
        ]
        self.seq += len(ids)
        scrubbed_pks = [row_key(v.id, v.version) for v in scrubbed]
        self.checkpoint.drop()  # it would bring the purged rows back
        self._checkpointed = None
        self.store.erase(pks, scrubbed_pks, kept, self._vecs, self.seq)
        for version in scrubbed:
            history = self.history[version.id]
            history[:] = [version if v.version == version.version else v for v in history]
            if self.latest[version.id].version == version.version:
                self.latest[version.id] = version
                self._index(version, self._vecs[version.id])
        for i in ids:
            del self.latest[i], self.history[i], self._vecs[i]
            self.index.remove(i)
        for survivor in {self.latest[v.id].merged_into for v in scrubbed}:  # it was searched by their contexts
            if survivor in self.latest:
                self._index(self.latest[survivor], self._vecs[survivor])
        self.working = [m for m in self.working if m not in erased]
        # erased means erased: the feed's recent events of these memories go too (the purge events stay)
        events = [
            e
            if e.memory is None or (e.memory_id, e.version) not in fixed
            else e.model_copy(update={"memory": fixed[(e.memory_id, e.version or 0)]})
            for e in self.changes
            if e.memory_id not in erased
        ]
        self.changes.clear()
        self.changes.extend(events)
        now = utcnow()
        for k, i in enumerate(ids):
            seq = self.seq - len(ids) + k + 1
            self._record(ChangeEvent(seq=seq, cube_id=self.meta.id, op=ChangeOp.purge, memory_id=i, at=now))
        return Purged(memory_ids=ids, scrubbed=sorted({v.id for v in scrubbed}))

    # ------------------------------------------------------------ reads

    def get(self, memory_id: str, version: int | None = None) -> MemoryItem:
        cur = self._current(memory_id)
        if version is None:
            return cur
        for item in self.history[memory_id]:
            if item.version == version:
                return item
        raise MemoryNotFound(
            f"memory {memory_id} has no version {version}", {"memory_id": memory_id, "version": version}
        )

    def versions(self, memory_id: str) -> list[MemoryItem]:
        self._current(memory_id)
        return list(self.history[memory_id])

    def page(
        self,
        offset: int,
        limit: int,
        states: Sequence[LifecycleState] = (LifecycleState.active,),
        kinds: Sequence[MemoryKind] = (),
        tag: str | None = None,
    ) -> MemoryList:
        chosen = [
            m
            for m in self.latest.values()
            if m.state in states and (not kinds or m.kind in kinds) and (tag is None or tag in m.tags)
        ]
        return MemoryList(items=chosen[offset : offset + limit], total=len(chosen), offset=offset, limit=limit)

    def training_set(self, req: TrainRequest) -> list[MemoryItem]:
        """What an adapter learns from: the active memories of the requested kinds (facts by default), with
        one of the tags, or exactly the ids named; at most ``max_memories``, in the order they were added."""
        ids = set(req.memory_ids) if req.memory_ids is not None else None
        tags = set(req.tags_any)
        chosen = [
            m
            for m in self.latest.values()
            if m.state == LifecycleState.active
            and (not req.kinds or m.kind in req.kinds)
            and (not tags or tags & set(m.tags))
            and (ids is None or m.id in ids)
        ]
        return chosen[: req.max_memories]

    def pinned(self, pinned_tag: str) -> list[MemoryItem]:
        return self.page(0, 1000, [LifecycleState.active], [], pinned_tag).items

    def working_items(self, pinned_tag: str) -> list[MemoryItem]:
        """The working set as it is now: latest versions, active, not pinned (those lead the prefix anyway)."""
        items = (self.latest.get(m) for m in self.working)
        return [m for m in items if m is not None and m.state == LifecycleState.active and pinned_tag not in m.tags]

    def set_working_set(
        self, ranked: Sequence[str], token_budget: int, pinned_tag: str, min_tokens: int = 0, commit: bool = True
    ) -> WorkingSet:
        """Keep the hottest of ``ranked`` (memory ids, hottest first) that are active and fit ``token_budget``
        (rendered as prefix lines); held in prefix order (oldest first), so equal sets render equal prefixes.
        A set under ``min_tokens`` (with the pinned memories) is not worth a cache: the cube holds none. Without
        ``commit`` the set is only proposed (the MemScheduler builds its prefix before the cube switches to it)."""
        chosen: list[MemoryItem] = []
        used = 0
        for memory_id in ranked:
            m = self.latest.get(memory_id)
            if m is None or m.state != LifecycleState.active or pinned_tag in m.tags:
                continue
            cost = approx_tokens(m.text) + 8  # the line's bullet, date and speaker
            if used + cost > token_budget:
                continue  # a smaller, cooler one may still fit
            chosen.append(m)
            used += cost
        pinned = self.pinned(pinned_tag)
        reason = ""
        if chosen and used + sum(approx_tokens(m.text) + 8 for m in pinned) < min_tokens:
            reason = f"working set of ~{used} tokens is below the break-even of {min_tokens}"
            chosen, used = [], 0
        chosen.sort(key=lambda m: (m.created_at, m.id))
        ids = [m.id for m in chosen]
        changed = ids != self.working
        if commit:
            self.working = ids
        return WorkingSet(
            cube_id=self.meta.id, items=chosen, pinned=pinned, tokens=used, changed=changed, reason=reason
        )

    def recall(self, pinned_tag: str, q: SearchQuery | None, qvec: np.ndarray | None) -> Recall:
        """What a chat needs from this cube in one call: its active memories tagged ``pinned_tag``, its working
        set and, with a query, the search hits for it."""
        return Recall(
            pinned=self.pinned(pinned_tag),
            working=self.working_items(pinned_tag),
            hits=self.search(q, qvec) if q is not None else [],
            kv_mode=self.meta.kv_mode,
        )

    def search(self, q: SearchQuery, qvec: np.ndarray | None) -> list[SearchHit]:
        """Reads only: usage is recorded by the caller, beside the versions (the MemScheduler's store)."""
        return [
            SearchHit(memory=self.latest[s.memory_id], score=s.score, dense_score=s.dense, bm25_score=s.bm25)
            for s in self.index.search(q, qvec)
        ]

    def _record(self, event: ChangeEvent) -> None:
        if len(self.changes) == CHANGE_RING:  # the oldest falls out: the ring now starts later
            self._ring_from = self.changes[1].seq
        self.changes.append(event)

    def changes_after(self, after_seq: int, limit: int = 1_000) -> list[ChangeEvent]:
        """Changes with ``seq > after_seq``, oldest first. Recent ones come from the ring; older
        ones (or all, after a reactivation) are rebuilt from the stored versions, where a purged
        memory has left nothing to report."""
        if after_seq >= self.seq:
            return []
        if self._ring_from <= after_seq + 1:
            return [e for e in self.changes if e.seq > after_seq][:limit]
        versions = [v for history in self.history.values() for v in history if v.seq > after_seq]
        versions.sort(key=lambda v: v.seq)
        return [_event(v) for v in versions[:limit]]

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Checkpoint (fast reactivation) and release storage. A life that changed nothing keeps the checkpoint
        it was opened from (most lives only read)."""
        if self._checkpointed != self.seq:
            items = [v for versions in self.history.values() for v in versions]
            self.checkpoint.save(self.seq, items, self._vecs, self.dim, self.index.indexed_terms(), self.index.key)
        self.store.close(self.seq if self.checkpoint.folder is not None else None)

    def destroy(self) -> None:
        self.checkpoint.drop()
        self.store.destroy()
