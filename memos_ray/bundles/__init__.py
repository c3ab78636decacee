"""Portable MemCube bundles: one signed file holding a cube's memories (every version, with provenance), its
adapters and its KV cache metadata; verified whole before anything of it is imported. No Ray here: the server
gathers what a bundle holds and writes what an import maps.

    data = write_bundle(BundleContents(cube=meta, memories=versions, ...), BundleKey.load(data_dir / "bundle.key"))
    bundle = read_bundle(data, max_bytes)  # raises a 4xx MemosError naming the problem
    mapped = map_memories(bundle, target_cube_id, imported_by=principal)
"""

from __future__ import annotations

from memos_ray.bundles.archive import (
    AdapterExport,
    BundleContents,
    VerifiedAdapter,
    VerifiedBundle,
    manifest_digest,
    read_bundle,
    write_bundle,
)
from memos_ray.bundles.format import (
    BUNDLE_FORMAT,
    MEDIA_TYPE,
    BundleAdapter,
    BundleCounts,
    BundleEntry,
    BundleManifest,
)
from memos_ray.bundles.kvmeta import cube_kv_entries, read_kv_entry
from memos_ray.bundles.mapping import (
    ImportOrigin,
    MappedMemories,
    adapter_active_on_import,
    map_adapter,
    map_memories,
    map_refs,
    memory_id_map,
    should_activate,
)
from memos_ray.bundles.signing import BundleKey, key_id_of, verify

__all__ = [
    "BUNDLE_FORMAT",
    "MEDIA_TYPE",
    "AdapterExport",
    "BundleAdapter",
    "BundleContents",
    "BundleCounts",
    "BundleEntry",
    "BundleKey",
    "BundleManifest",
    "ImportOrigin",
    "MappedMemories",
    "VerifiedAdapter",
    "VerifiedBundle",
    "adapter_active_on_import",
    "cube_kv_entries",
    "key_id_of",
    "manifest_digest",
    "map_adapter",
    "map_memories",
    "map_refs",
    "memory_id_map",
    "read_bundle",
    "read_kv_entry",
    "should_activate",
    "verify",
    "write_bundle",
]
