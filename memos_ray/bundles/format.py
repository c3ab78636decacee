"""What a MemCube bundle holds: one zip file whose ``manifest.json`` lists every other entry with its hash.

    manifest.json                 BundleManifest (below), signed
    manifest.sig                  the Ed25519 signature of manifest.json's exact bytes, hex
    memories.jsonl                every version of every memory, one MemoryItem per line, with its provenance
    adapters/<id>.safetensors     an adapter's weights, as the registry stores them (its info as trained inside)
    adapters/<id>.json            its AdapterInfo as the registry had it (stale marks included)

KV caches travel as metadata only: an importing server rebuilds them (they are never trusted across servers or
models). The manifest names the exporter (principal, server, signing key) and the base model it served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from memos_ray.types import (
    BUNDLE_MEDIA_TYPE,
    AdapterInfo,
    CubeMeta,
    Id,
    KVCacheEntry,
    MemoryItem,
    ModelIdentity,
    Strict,
    UtcDatetime,
)

BundleFormat = Literal["memos-ray.bundle/1"]
BUNDLE_FORMAT: BundleFormat = "memos-ray.bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MEMORIES = "memories.jsonl"
MEDIA_TYPE = BUNDLE_MEDIA_TYPE

ENTRY_PATH = r"^(memories\.jsonl|adapters/[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.(safetensors|json))$"
"""The only names a listed entry may have: no folders of its own, no dots but the extension."""


def adapter_paths(adapter_id: str) -> tuple[str, str]:
    """The entries of an adapter: its weights and its config."""
    return f"adapters/{adapter_id}.safetensors", f"adapters/{adapter_id}.json"


class BundleEntry(Strict):
    """One file of the bundle besides the manifest and its signature."""

    path: str = Field(pattern=ENTRY_PATH)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0, description="uncompressed bytes")


class BundleCounts(Strict):
    memories: int = Field(ge=0, description="distinct memories")
    versions: int = Field(ge=0, description="memory versions (lines of memories.jsonl)")
    adapters: int = Field(0, ge=0)
    kv_caches: int = Field(0, ge=0)


class BundleAdapter(Strict):
    """An adapter in the bundle: which, trained on what base model, and where its files are."""

    id: Id
    version: int = Field(ge=1)
    base_model: ModelIdentity
    weights: str = Field(pattern=ENTRY_PATH, description="entry of its safetensors weights")
    config: str = Field(pattern=ENTRY_PATH, description="entry of its AdapterInfo JSON")
    active: bool = Field(False, description="it was the cube's active adapter on the exporting server")

    @model_validator(mode="after")
    def _paths(self) -> BundleAdapter:
        if (self.weights, self.config) != adapter_paths(self.id):
            raise ValueError(f"adapter {self.id}: its entries must be {adapter_paths(self.id)}")
        return self


class BundleManifest(Strict):
    """What a bundle is and what it holds; signed by the exporting server's bundle key."""

    format: BundleFormat = BUNDLE_FORMAT
    cube: CubeMeta = Field(description="the cube's record on the exporting server (grants are not imported)")
    exported_at: UtcDatetime
    exported_by: str = Field(min_length=1, max_length=256, description="the principal that exported it")
    exported_from: str = Field(min_length=1, max_length=1_024, description="the exporting server: id or URL")
    signer_public_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="Ed25519 public key, raw bytes as hex")
    signer_key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    model: ModelIdentity | None = Field(None, description="the base model the exporting server ran")
    counts: BundleCounts
    entries: list[BundleEntry]
    kv_caches: list[KVCacheEntry] = Field(
        default_factory=list, description="the KV caches the cube had: metadata only, rebuilt on import"
    )
    adapters: list[BundleAdapter] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        paths = [e.path for e in self.entries]
        if len(set(paths)) != len(paths):
            raise ValueError("an entry is listed twice")
        if MEMORIES not in paths:
            raise ValueError(f"{MEMORIES} is not listed")
        ids = [a.id for a in self.adapters]
        if len(set(ids)) != len(ids):
            raise ValueError("an adapter is listed twice")
        if sum(a.active for a in self.adapters) > 1:
            raise ValueError("more than one adapter is marked active")
        adapter_files = {p for a in self.adapters for p in (a.weights, a.config)}
        if adapter_files != set(paths) - {MEMORIES}:
            raise ValueError("the adapters' entries and the listed adapter files differ")
        if self.counts.adapters != len(self.adapters) or self.counts.kv_caches != len(self.kv_caches):
            raise ValueError("counts do not match the adapters and KV caches listed")
        return self

    def entry(self, path: str) -> BundleEntry:
        return next(e for e in self.entries if e.path == path)


def check_adapter_config(meta: BundleAdapter, info: AdapterInfo, cube_id: str) -> None:
    """An adapter's config must say what the manifest says of it (raises ValueError)."""
    if info.id != meta.id or info.version != meta.version or info.base_model != meta.base_model:
        raise ValueError(f"adapter {meta.id}: its config does not match the manifest")
    if info.cube_id != cube_id:
        raise ValueError(f"adapter {meta.id}: its config names cube {info.cube_id}, not {cube_id}")


@dataclass(frozen=True)
class AdapterExport:
    """One adapter to export: the registry's info and its weights blob as the registry stores it."""

    info: AdapterInfo
    weights: bytes
    active: bool = False


@dataclass(frozen=True)
class BundleContents:
    """What the exporting server gathers for one cube."""

    cube: CubeMeta
    memories: Sequence[MemoryItem]  # every version of every memory, deleted ones too if they are to travel
    exported_by: str
    exported_from: str
    model: ModelIdentity | None = None
    adapters: Sequence[AdapterExport] = ()
    kv_caches: Sequence[KVCacheEntry] = ()
    exported_at: datetime | None = None


@dataclass(frozen=True)
class VerifiedAdapter:
    meta: BundleAdapter
    info: AdapterInfo  # adapters/<id>.json: the exporting registry's info (stale marks included)
    weights: bytes  # adapters/<id>.safetensors: decodes with adapter_from_bytes (checked)


@dataclass(frozen=True)
class VerifiedBundle:
    manifest: BundleManifest
    memories: list[MemoryItem]
    adapters: list[VerifiedAdapter] = field(default_factory=list)
    digest: str = ""  # SHA-256 of manifest.json: names this bundle (and seeds its id map)


__all__ = [
    "BUNDLE_FORMAT",
    "ENTRY_PATH",
    "MANIFEST",
    "MEDIA_TYPE",
    "MEMORIES",
    "SIGNATURE",
    "AdapterExport",
    "BundleAdapter",
    "BundleContents",
    "BundleCounts",
    "BundleEntry",
    "BundleManifest",
    "VerifiedAdapter",
    "VerifiedBundle",
    "adapter_paths",
    "check_adapter_config",
]
