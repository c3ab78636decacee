"""Where KV caches live: the storage interface (after LMCache's ``StorageBackendInterface``) and the
local backend every model worker uses.

:class:`KVStoreBackend` is the seam: ``contains`` (optionally pinning), ``put``, blocking and
non-blocking ``get``, ``pin``/``unpin``, ``remove``, ``close``, with batched defaults that loop. The
vLLM KV connector of a later wave implements it over vLLM's blocks; :class:`LocalKVStore` implements
it here: an LRU in memory under a byte budget, backed by safetensors files. Every entry is written to
disk when it is put, so evicting one from memory only drops tensors, and any worker on the machine
(or a restarted one) can load it again. A pinned entry is never evicted (it may still be removed).
Disk files are named by a hash of the key; the entry's metadata travels inside the file.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from memos_ray.activation import kvcache
from memos_ray.types import KVCacheEntry

Tensors = dict[str, Any]
"""A cache's tensors by name (``k.<layer>``, ``v.<layer>``): torch tensors, never inside a pydantic model."""


class KVStoreBackend(abc.ABC):
    """A place KV caches are kept, by key (model identity, adapter, content hash of the prefix)."""

    @abc.abstractmethod
    def contains(self, key: str, pin: bool = False) -> bool:
        """Whether the cache is held here (at any tier); with ``pin``, it is also pinned when it is."""

    @abc.abstractmethod
    def put(self, entry: KVCacheEntry, tensors: Tensors) -> None:
        """Keep a cache (replacing one under the same key)."""

    @abc.abstractmethod
    def get(self, key: str) -> tuple[KVCacheEntry, Tensors] | None:
        """The cache, from whichever tier holds it (blocking), or None."""

    async def get_non_blocking(self, key: str) -> tuple[KVCacheEntry, Tensors] | None:
        """As :meth:`get`, off the event loop."""
        return await asyncio.to_thread(self.get, key)

    @abc.abstractmethod
    def pin(self, key: str) -> bool:
        """Keep the cache from eviction until :meth:`unpin`; False when it is not held."""

    @abc.abstractmethod
    def unpin(self, key: str) -> bool:
        """Let the cache be evicted again; False when it was not pinned."""

    @abc.abstractmethod
    def remove(self, key: str) -> bool:
        """Forget the cache at every tier; False when it was not held."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the backend holds (memory, handles); what is durable stays."""

    def batched_contains(self, keys: Sequence[str], pin: bool = False) -> int:
        """How many of ``keys``, from the first, are held (a prefix of chunks, as LMCache counts)."""
        for n, key in enumerate(keys):
            if not self.contains(key, pin):
                return n
        return len(keys)

    def batched_get(self, keys: Sequence[str]) -> list[tuple[KVCacheEntry, Tensors] | None]:
        return [self.get(key) for key in keys]

    def batched_remove(self, keys: Sequence[str]) -> int:
        return sum(self.remove(key) for key in keys)


class LocalKVStore(KVStoreBackend):
    """Memory (LRU under ``budget_bytes``) over disk (safetensors under ``spill_dir``)."""

    def __init__(self, spill_dir: Path, budget_bytes: int, on_evict: Callable[[str], None] | None = None) -> None:
        self.spill_dir = spill_dir
        self.budget = budget_bytes
        self.on_evict = on_evict  # told when a key leaves memory (the worker drops its object-store ref)
        self._mem: OrderedDict[str, tuple[KVCacheEntry, Tensors]] = OrderedDict()
        self._pinned: set[str] = set()
        self.used = 0
        self.evictions = 0
        self.disk_loads = 0

    def path(self, key: str) -> Path:
        return self.spill_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.safetensors"

    def in_memory(self, key: str) -> bool:
        return key in self._mem

    def contains(self, key: str, pin: bool = False) -> bool:
        held = key in self._mem or self.path(key).exists()
        if held and pin:
            self._pinned.add(key)
        return held

    def put(self, entry: KVCacheEntry, tensors: Tensors, persist: bool = True) -> None:
        """``persist=False``: the file is written already (or the entry came from another worker's)."""
        if persist and not self.path(entry.key).exists():
            kvcache.save(self.path(entry.key), entry, tensors)
        self._admit(entry, tensors)

    def get(self, key: str) -> tuple[KVCacheEntry, Tensors] | None:
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

    def pin(self, key: str) -> bool:
        return self.contains(key, pin=True)

    def unpin(self, key: str) -> bool:
        if key not in self._pinned:
            return False
        self._pinned.discard(key)
        self._evict()
        return True

    def remove(self, key: str) -> bool:
        self._pinned.discard(key)
        found = self._drop(key)
        path = self.path(key)
        if path.exists():
            path.unlink(missing_ok=True)  # workers on one node share the folder: another may win the race
            found = True
        return found

    def evict(self, key: str) -> bool:
        """Drop the cache from memory, keeping its file (a demotion); never a pinned one."""
        if key in self._pinned:
            return False
        return self._drop(key)

    def close(self) -> None:
        for key in list(self._mem):
            self._drop(key)
        self._pinned.clear()

    def keys(self) -> list[str]:
        """The keys in memory, least recently used first."""
        return list(self._mem)

    def _admit(self, entry: KVCacheEntry, tensors: Tensors) -> None:
        self._drop(entry.key, notify=False)  # a replacement, not an eviction
        self._mem[entry.key] = (entry, tensors)
        self.used += entry.bytes
        self._evict(keep=entry.key)

    def _evict(self, keep: str | None = None) -> None:
        """Least recently used first, never a pinned entry or the one just admitted."""
        while self.used > self.budget:
            victim = next((k for k in self._mem if k not in self._pinned and k != keep), None)
            if victim is None:
                return
            self._drop(victim)
            self.evictions += 1

    def _drop(self, key: str, notify: bool = True) -> bool:
        hit = self._mem.pop(key, None)
        if hit is None:
            return False
        self.used -= hit[0].bytes
        if notify and self.on_evict is not None:
            self.on_evict(key)
        return True
