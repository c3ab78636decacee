"""Where a worker keeps KV caches: an LRU in memory under a byte budget, backed by safetensors files.

Shaped after LMCache's storage backends (contains / put / get / remove): every entry is
written to disk when it is put, so evicting one from memory only drops tensors, and any
worker on the machine (or a restarted one) can load it again. Disk files are named by a
hash of the key; the entry's metadata travels inside the file.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memos_ray.activation import kvcache
from memos_ray.types import KVCacheEntry


class KVStore:
    def __init__(self, spill_dir: Path, budget_bytes: int, on_evict: Callable[[str], None] | None = None) -> None:
        self.spill_dir = spill_dir
        self.budget = budget_bytes
        self.on_evict = on_evict  # told when a key leaves memory (the worker drops its object-store ref)
        self._mem: OrderedDict[str, tuple[KVCacheEntry, dict[str, Any]]] = OrderedDict()
        self.used = 0
        self.evictions = 0
        self.disk_loads = 0

    def path(self, key: str) -> Path:
        return self.spill_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.safetensors"

    def in_memory(self, key: str) -> bool:
        return key in self._mem

    def contains(self, key: str) -> bool:
        return key in self._mem or self.path(key).exists()

    def put(self, entry: KVCacheEntry, tensors: dict[str, Any], persist: bool = True) -> None:
        if persist and not self.path(entry.key).exists():
            kvcache.save(self.path(entry.key), entry, tensors)
        self._admit(entry, tensors)

    def get(self, key: str) -> tuple[KVCacheEntry, dict[str, Any]] | None:
        """From memory (refreshing its place), else from disk (admitted again), else None."""
        hit = self._mem.get(key)
        if hit is not None:
            self._mem.move_to_end(key)
            return hit
        path = self.path(key)
        if not path.exists():
            return None
        entry, tensors = kvcache.load(path)
        self.disk_loads += 1
        self._admit(entry, tensors)
        return entry, tensors

    def remove(self, key: str) -> bool:
        found = self._drop(key)
        path = self.path(key)
        if path.exists():
            path.unlink(missing_ok=True)  # workers on one node share the folder: another may win the race
            found = True
        return found

    def keys(self) -> list[str]:
        return list(self._mem)

    def entries(self) -> list[KVCacheEntry]:
        return [entry for entry, _ in self._mem.values()]

    def _admit(self, entry: KVCacheEntry, tensors: dict[str, Any]) -> None:
        self._drop(entry.key, notify=False)  # a replacement, not an eviction
        self._mem[entry.key] = (entry, tensors)
        self.used += entry.bytes
        while self.used > self.budget and len(self._mem) > 1:
            oldest = next(iter(self._mem))
            self._drop(oldest)
            self.evictions += 1

    def _drop(self, key: str, notify: bool = True) -> bool:
        hit = self._mem.pop(key, None)
        if hit is None:
            return False
        self.used -= hit[0].bytes
        if notify and self.on_evict is not None:
            self.on_evict(key)
        return True
