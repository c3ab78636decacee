"""A cube's lifecycle plan: which memories expire, archive or merge under its :class:`LifecyclePolicy`.

Pure functions over a cube's latest versions and vectors, so the rules are tested without Ray; the cube
(:meth:`memos_ray.plaintext.cube.MemCube.sweep_lifecycle`) writes the moves as new versions, and the
MemScheduler decides when to sweep.

- *expire*: a memory of a kind with a time to live, that long after it was last written (an edit or a
  restore renews it). Active and archived memories expire.
- *archive*: an active memory not used (retrieved, or in a chat's prompt or prefix) for the archive period;
  a memory never used counts from its last write. With a salience bar, only an unused memory that says
  little (its words' summed idf in the cube below the bar: greetings, thanks, small talk) is archived: an
  agent asks later about any fact it was told, so "unused" alone would hide exactly what it asks next.
  Pinned memories are an explicit choice: never archived.
- *merge*: near-duplicates (same kind and speaker, cosine at least the threshold) merge into the oldest of
  them. Only memories written since the last check are compared (against all), so a sweep of a cube that
  did not change compares nothing; a memory restored from a merge is never merged again by the policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from memos_ray.types import LifecyclePolicy, LifecycleState, MemoryItem

_BLOCK = 256  # new memories compared per matrix product


@dataclass(frozen=True)
class LifecyclePlan:
    expire: list[str] = field(default_factory=list)
    archive: list[str] = field(default_factory=list)
    merge: dict[str, str] = field(default_factory=dict)  # near-duplicate -> the memory it merges into
    scores: dict[str, float] = field(default_factory=dict)  # near-duplicate -> its cosine to that memory
    checked: int = 0
    next_due: float | None = None


def _unit(vecs: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


def _group_key(m: MemoryItem) -> tuple[str, str]:
    return m.kind.value, (m.provenance.speaker or "").lower()


def near_duplicates(
    members: list[MemoryItem], vecs: dict[str, np.ndarray], new: set[str], threshold: float
) -> tuple[dict[str, str], dict[str, float]]:
    """Within one kind-and-speaker group ordered oldest first: each new member whose best match among the
    older ones reaches ``threshold`` merges into that match's survivor (chains resolve to the oldest)."""
    positions = [i for i, m in enumerate(members) if m.id in new and i > 0]
    if not positions:
        return {}, {}
    x = _unit(np.stack([vecs[m.id] for m in members]).astype(np.float32))
    parent = list(range(len(members)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    merged: dict[str, str] = {}
    scores: dict[str, float] = {}
    for start in range(0, len(positions), _BLOCK):
        block = positions[start : start + _BLOCK]
        sims = x[block] @ x[: block[-1]].T  # each new one against everything older than the block's last
        for r, i in enumerate(block):
            row = sims[r, :i]
            j = int(np.argmax(row))
            if float(row[j]) >= threshold:
                parent[i] = root(j)
                merged[members[i].id] = members[parent[i]].id
                scores[members[i].id] = round(float(row[j]), 4)
    return merged, scores


def plan(
    latest: Iterable[MemoryItem],
    vecs: dict[str, np.ndarray],
    policy: LifecyclePolicy,
    used_at: dict[str, float],
    now: float,
    merge_after_seq: int,
    pinned_tag: str,
    was_merged: Callable[[str], bool],
    written_at: Callable[[MemoryItem], float] | None = None,
    first_seq: Callable[[MemoryItem], int] | None = None,
    salience: Callable[[MemoryItem], float] | None = None,
) -> LifecyclePlan:
    """``used_at``: epoch seconds of each memory's last use (the MemScheduler's usage); ``merge_after_seq``:
    memories written after this seq are compared for near-duplicates; ``was_merged``: whether a memory was
    merged before (restored from it: the policy leaves it alone); ``written_at``: when a memory was last written
    (default: its latest version; the cube leaves out the policy's own moves); ``first_seq``: the seq of a
    memory's first version, which orders "oldest" (default: its latest version's); ``salience``: what a memory
    says (:meth:`memos_ray.plaintext.index.HybridIndex.salience`), needed when the policy has a salience bar."""
    bar = policy.archive_below_salience
    if bar is not None and salience is None:
        raise ValueError("a policy with archive_below_salience needs the memories' salience")
    expire: list[str] = []
    archive: list[str] = []
    active: list[MemoryItem] = []
    due: list[float] = []
    for m in latest:
        if m.state not in (LifecycleState.active, LifecycleState.archived):
            continue
        written = written_at(m) if written_at is not None else m.updated_at.timestamp()
        ttl = policy.ttl_s.get(m.kind)
        if ttl is not None:
            if now - written >= ttl:
                expire.append(m.id)
                continue
            due.append(written + ttl)
        if m.state != LifecycleState.active:
            continue
        pinned = pinned_tag in m.tags
        if policy.archive_after_s is not None and not pinned:
            last = max(used_at.get(m.id, 0.0), written)
            if now - last < policy.archive_after_s:
                due.append(last + policy.archive_after_s)
            elif bar is None or (salience is not None and salience(m) < bar):  # a salient one stays
                archive.append(m.id)
                continue
        if not pinned:
            active.append(m)
    merge: dict[str, str] = {}
    scores: dict[str, float] = {}
    checked = 0
    if policy.merge_threshold is not None:
        groups: dict[tuple[str, str], list[MemoryItem]] = {}
        for m in active:
            groups.setdefault(_group_key(m), []).append(m)
        for members in groups.values():
            members.sort(key=lambda m: (m.created_at, first_seq(m) if first_seq else m.seq))  # written first, first
            new = {m.id for m in members if m.seq > merge_after_seq and not was_merged(m.id)}
            checked += len(new)
            found, found_scores = near_duplicates(members, vecs, new, policy.merge_threshold)
            merge.update(found)
            scores.update(found_scores)
    return LifecyclePlan(expire, archive, merge, scores, checked, min(due) if due else None)


__all__ = ["LifecyclePlan", "near_duplicates", "plan"]
