"""Bringing a verified bundle into a cube: fresh ids, references rewritten, the import recorded on every version.

Every memory gets a new id (all its versions the same one), derived from the bundle's digest, the target cube
and the old id, time-ordered by when the memory was first stored: importing the same bundle into the same cube
again yields the same ids (a repeat is recognisable), into another cube other ids. References between memories
of the bundle (``provenance.derived_from``, ``supersedes``, ``superseded_by``, ``merged_into``, ``merged_from``)
follow the map; a reference to a memory outside the bundle names nothing on this server and is dropped (counted).
The original author and source stay in ``provenance``; the import is recorded in ``metadata`` (``imported_*``
keys), the existing types being unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from memos_ray.bundles.format import VerifiedAdapter, VerifiedBundle
from memos_ray.types import AdapterInfo, MemoryItem, MemoryRef, MetaValue, ModelIdentity, as_utc


@dataclass(frozen=True)
class ImportOrigin:
    """Who imports a bundle and where it came from."""

    imported_by: str
    exported_by: str
    exported_from: str
    key_id: str
    cube_id: str  # the cube's id on the exporting server
    digest: str  # the bundle's manifest digest

    @classmethod
    def of(cls, bundle: VerifiedBundle, imported_by: str) -> ImportOrigin:
        m = bundle.manifest
        return cls(
            imported_by=imported_by,
            exported_by=m.exported_by,
            exported_from=m.exported_from,
            key_id=m.signer_key_id,
            cube_id=m.cube.id,
            digest=bundle.digest,
        )

    def metadata(self, memory_id: str) -> dict[str, MetaValue]:
        """What every imported version records of its import."""
        return {
            "imported_from": self.exported_from,
            "imported_from_cube": self.cube_id,
            "imported_from_id": memory_id,
            "imported_key_id": self.key_id,
            "imported_by": self.imported_by,
            "exported_by": self.exported_by,
        }


@dataclass(frozen=True)
class MappedMemories:
    items: list[MemoryItem]  # every version, in (new id, version) order, ready for the target cube
    id_map: dict[str, str]  # old memory id -> new
    dropped_refs: int  # references to memories outside the bundle, left out


def memory_id_map(memories: Sequence[MemoryItem], target_cube_id: str, seed: str) -> dict[str, str]:
    """A new id per memory id: ``m`` + 12 hex digits of the memory's first ``created_at`` in ms + 10 of a hash."""
    first: dict[str, int] = {}
    for m in memories:
        created = as_utc(m.created_at)
        ms = max(0, int(created.timestamp() * 1000)) if created is not None else 0
        first[m.id] = min(first.get(m.id, ms), ms)
    out: dict[str, str] = {}
    taken: set[str] = set()
    for old in sorted(first):
        salt = 0
        while True:  # a clash of 40 hash bits in the same millisecond: try the next salt
            digest = hashlib.sha256(f"{seed}|{target_cube_id}|{old}|{salt}".encode()).hexdigest()
            new = f"m{first[old]:012x}{digest[:10]}"
            if new not in taken:
                break
            salt += 1
        out[old] = new
        taken.add(new)
    return out


def map_refs(refs: Sequence[MemoryRef], id_map: dict[str, str]) -> list[MemoryRef]:
    """The refs that point into the bundle, through the map (the others are dropped)."""
    return [MemoryRef(memory_id=id_map[r.memory_id], version=r.version) for r in refs if r.memory_id in id_map]


def _map_memory(m: MemoryItem, target_cube_id: str, id_map: dict[str, str], origin: ImportOrigin) -> MemoryItem:
    derived = map_refs(m.provenance.derived_from, id_map)
    return m.model_copy(
        update={
            "id": id_map[m.id],
            "cube_id": target_cube_id,
            "metadata": {**m.metadata, **origin.metadata(m.id)},
            "provenance": m.provenance.model_copy(update={"derived_from": derived}),
            "supersedes": [id_map[s] for s in m.supersedes if s in id_map],
            "superseded_by": id_map.get(m.superseded_by) if m.superseded_by else None,
            "merged_into": id_map.get(m.merged_into) if m.merged_into else None,
            "merged_from": map_refs(m.merged_from, id_map),
        }
    )


def _external_refs(m: MemoryItem, id_map: dict[str, str]) -> int:
    ids = [r.memory_id for r in (*m.provenance.derived_from, *m.merged_from)]
    ids += [*m.supersedes, *(x for x in (m.superseded_by, m.merged_into) if x)]
    return sum(i not in id_map for i in ids)


def map_memories(bundle: VerifiedBundle, target_cube_id: str, imported_by: str) -> MappedMemories:
    """The bundle's memories (all versions) as the target cube is to hold them."""
    origin = ImportOrigin.of(bundle, imported_by)
    id_map = memory_id_map(bundle.memories, target_cube_id, bundle.digest)
    items = [_map_memory(m, target_cube_id, id_map, origin) for m in bundle.memories]
    items.sort(key=lambda m: (m.id, m.version))
    dropped = sum(_external_refs(m, id_map) for m in bundle.memories)
    return MappedMemories(items=items, id_map=id_map, dropped_refs=dropped)


def adapter_active_on_import(adapter_base: ModelIdentity, server_model: ModelIdentity) -> bool:
    """An adapter may run here only on the very base model it was trained on: same name, file and dtype."""
    return (adapter_base.name, adapter_base.file_sha256, adapter_base.dtype) == (
        server_model.name,
        server_model.file_sha256,
        server_model.dtype,
    )


def should_activate(adapter: VerifiedAdapter, server_model: ModelIdentity) -> bool:
    """Whether an imported adapter becomes the cube's active one: it was active where it came from, its base
    model is this server's, it is not stale, and it did not fail its exam. Otherwise it is kept, inactive."""
    info = adapter.info
    passed = info.evaluation is None or info.evaluation.passed
    return adapter.meta.active and adapter_active_on_import(info.base_model, server_model) and not info.stale and passed


def map_adapter(
    info: AdapterInfo, *, target_cube_id: str, new_id: str, version: int, id_map: dict[str, str]
) -> AdapterInfo:
    """An imported adapter's info: its new id and version in the target cube, its sources through the map."""
    return info.model_copy(
        update={
            "id": new_id,
            "cube_id": target_cube_id,
            "version": version,
            "sources": map_refs(info.sources, id_map),
        }
    )


__all__ = [
    "ImportOrigin",
    "MappedMemories",
    "adapter_active_on_import",
    "map_adapter",
    "map_memories",
    "map_refs",
    "memory_id_map",
    "should_activate",
]
