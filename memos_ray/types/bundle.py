"""Portable MemCube bundles as the API speaks of them: what an import did, the server's signing key, and an
adapter's weights as they cross between the Adapters actor and the ingress (the file format itself is
:mod:`memos_ray.bundles`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from memos_ray.types.base import Strict
from memos_ray.types.model import ModelIdentity
from memos_ray.types.parametric import AdapterInfo

BUNDLE_MEDIA_TYPE = "application/vnd.memos-ray.bundle+zip"
"""The content type of a bundle file (``<cube>.memcube``): a zip, signed."""


class AdapterBlob(Strict):
    """An adapter with its weights (the registry's safetensors blob): exported from a cube, or to import into one
    (``active``: on export, it was the cube's active adapter; on import, make it the active one)."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    info: AdapterInfo
    weights: bytes
    active: bool = False


class AdapterImported(Strict):
    """One adapter a bundle brought: its new id in the target cube, and whether it is the cube's active one."""

    id: str = Field(description="its id in the target cube")
    from_id: str = Field(description="its id on the exporting server")
    version: int
    base_model: ModelIdentity
    active: bool
    reason: str = Field("", description="why it was kept inactive (empty when active)")


class BundleImported(Strict):
    """What an import wrote into the target cube: every version of every memory (new ids, provenance kept, the
    import recorded in each version's ``imported_*`` metadata) and the adapters; KV caches are never imported."""

    cube_id: str = Field(description="the target cube")
    memories: int = Field(description="memories imported")
    versions: int = Field(description="memory versions imported (all of them, deleted and archived ones too)")
    adapters: list[AdapterImported] = Field(default_factory=list)
    adapters_inactive: int = Field(0, description="adapters kept but not made active (another base model, ...)")
    kv_caches: int = Field(0, description="KV caches the bundle described: not imported, rebuilt here on use")
    id_map: dict[str, str] = Field(default_factory=dict, description="the exporting server's memory id -> the new")
    dropped_refs: int = Field(0, description="references to memories outside the bundle, left out")
    redacted: int = Field(0, description="versions whose text, context or metadata redaction masked on import")
    signer_key_id: str
    exported_from: str
    exported_by: str
    exported_at: datetime
    from_cube: str = Field(description="the cube's id on the exporting server")
    digest: str = Field(description="SHA-256 of the bundle's manifest: names this bundle")


class BundleKeyInfo(Strict):
    """The server's bundle signing key, public half: what another server pins in governance.bundle_trusted_keys."""

    public_key: str = Field(description="Ed25519 public key, raw bytes as hex")
    key_id: str = Field(description="first 16 hex digits of its SHA-256")


__all__ = ["BUNDLE_MEDIA_TYPE", "AdapterBlob", "AdapterImported", "BundleImported", "BundleKeyInfo"]
