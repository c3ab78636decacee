"""The worker's KV store: LRU under a byte budget, everything on disk, reload after eviction."""

from __future__ import annotations

from pathlib import Path

import torch

from memos_ray.activation.store import LocalKVStore
from memos_ray.types import KVCacheEntry, MemoryRef, ModelIdentity, utcnow

MODEL = ModelIdentity(name="m", file_sha256="0" * 64, dtype="float32")


def entry(key: str, n: int) -> tuple[KVCacheEntry, dict[str, torch.Tensor]]:
    tensors = {"k.0": torch.full((1, 1, n, 4), float(n)), "v.0": torch.zeros((1, 1, n, 4))}
    e = KVCacheEntry(
        key=key,
        model=MODEL,
        sources=[MemoryRef(memory_id="a", version=1)],
        tokens=n,
        bytes=2 * n * 4 * 4,
        content_hash=key,
        created_at=utcnow(),
    )
    return e, tensors


def test_lru_budget_spills_and_reloads(tmp_path: Path) -> None:
    store = LocalKVStore(tmp_path, budget_bytes=3 * 32 * 10)  # three 10-token entries fit
    for key in ("a", "b", "c"):
        store.put(*entry(key, 10))
    assert store.keys() == ["a", "b", "c"] and store.used == 960
    assert store.get("a") is not None  # a is now the most recent
    store.put(*entry("d", 10))
    assert store.keys() == ["c", "a", "d"] and store.evictions == 1  # b, least recently used, left memory
    assert store.contains("b") and not store.in_memory("b")
    got = store.get("b")  # ...and comes back from disk
    assert got is not None and store.disk_loads == 1 and torch.equal(got[1]["k.0"], entry("b", 10)[1]["k.0"])
    assert store.used <= store.budget
    assert store.remove("b") and not store.contains("b") and store.get("b") is None


def test_received_entries_are_not_written_again(tmp_path: Path) -> None:
    store = LocalKVStore(tmp_path, budget_bytes=10_000)
    store.put(*entry("x", 5), persist=False)
    assert store.in_memory("x") and not store.path("x").exists()


def test_eviction_hook_fires_on_eviction_and_removal_not_on_replacement(tmp_path: Path) -> None:
    evicted: list[str] = []
    store = LocalKVStore(tmp_path, budget_bytes=2 * 32 * 10, on_evict=evicted.append)
    store.put(*entry("a", 10))
    store.put(*entry("a", 10), persist=False)  # the same key again (e.g. re-published): not an eviction
    assert evicted == []
    store.put(*entry("b", 10))
    store.put(*entry("c", 10))  # over budget: a leaves memory
    assert evicted == ["a"]
    store.remove("b")
    assert evicted == ["a", "b"]
    store.remove("b")  # a second removal (another worker got there first) is harmless


def test_a_pinned_cache_is_never_evicted(tmp_path: Path) -> None:
    store = LocalKVStore(tmp_path, budget_bytes=2 * 32 * 10)  # two 10-token entries fit
    store.put(*entry("a", 10))
    assert store.pin("a") and not store.pin("nothing")
    store.put(*entry("b", 10))
    store.put(*entry("c", 10))  # over budget: b goes, not the older but pinned a
    assert store.keys() == ["a", "c"] and store.evictions == 1
    assert store.unpin("a") and not store.unpin("a")
    store.put(*entry("d", 10))  # a is evictable again
    assert store.keys() == ["c", "d"]
    assert store.batched_contains(["a", "b", "zzz", "c"]) == 2  # held on disk: a, b; then a miss
    store.close()
    assert store.keys() == [] and store.contains("c")  # memory released, the files stay
