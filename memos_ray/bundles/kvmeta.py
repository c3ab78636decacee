"""The KV cache metadata a bundle carries: the entries of the cache files in a folder (``<data_dir>/kv``, where
model workers persist them) built from one cube's memories alone. Only each file's safetensors header is read
(no tensor, no torch): its ``entry`` metadata, the :class:`KVCacheEntry` the worker wrote.

A folder holds the caches of the workers of its node: on a cluster an export describes the caches of the
ingress's node only. They are metadata either way: an importing server rebuilds caches, never loads them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Set
from pathlib import Path

from pydantic import ValidationError

from memos_ray.types import KVCacheEntry

MAX_HEADER = 1 << 20  # a cache file's header is a few KiB (tensor names, the entry): more is not one of ours
MAX_FILES = 10_000


def read_kv_entry(path: Path) -> KVCacheEntry | None:
    """The entry in a cache file's header; None for a torn, foreign or oversized one."""
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > MAX_HEADER:
                return None
            header = json.loads(f.read(size))
        return KVCacheEntry.model_validate_json(header["__metadata__"]["entry"])
    except (OSError, struct.error, ValueError, KeyError, TypeError, ValidationError):
        return None


def cube_kv_entries(folder: Path, memory_ids: Set[str]) -> list[KVCacheEntry]:
    """The caches in ``folder`` whose every source is one of ``memory_ids`` (one cube's: a cache built from
    several cubes would name the others' memories), oldest first."""
    if not memory_ids or not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.safetensors"))[:MAX_FILES]:
        entry = read_kv_entry(path)
        if entry is not None and entry.sources and all(s.memory_id in memory_ids for s in entry.sources):
            found.append(entry)
    return sorted(found, key=lambda e: (e.created_at, e.key))


__all__ = ["cube_kv_entries", "read_kv_entry"]
