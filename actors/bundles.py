"""Portable MemCube bundles, for every entry point: export a cube whole (every version of every memory, its
adapters with their weights, its KV cache metadata) as one file signed with this server's key, and import
one into an existing cube. The file format and its verification are :mod:`memos_ray.bundles`; the HTTP routes
(``serve/routes/bundles.py``) authorize nothing themselves: they call this and audit what it reports.

An import writes nothing before the whole bundle is verified (signature, every hash) and mapped (new ids); then
the memories go in through the cube's write path, all or nothing, refused with 409 when the cube holds them
already (a repeat of the same bundle); then the adapters. Redaction applies as on any ingest. KV caches are
never imported: the bundle's metadata says which there were, and they are rebuilt here on use.

The signing key is ``governance.bundle_key_file``, or ``<data_dir>/bundle.key`` made on first use: on a
cluster, ingress replicas on other nodes would each make their own unless it is a mounted file.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray.actor import ActorHandle

from actors.adapters import Adapters
from actors.calls import call
from actors.cube import CubeHost
from actors.cubes import Cubes
from actors.scheduler import Scheduler
from memos_ray.bundles import (
    AdapterExport,
    BundleContents,
    BundleKey,
    ImportOrigin,
    VerifiedAdapter,
    adapter_active_on_import,
    cube_kv_entries,
    manifest_digest,
    map_memories,
    read_bundle,
    should_activate,
    write_bundle,
)
from memos_ray.config import MemosConfig
from memos_ray.errors import Conflict, Unavailable
from memos_ray.governance.redact import Redactor
from memos_ray.plaintext.text import index_text
from memos_ray.plaintext.transfer import version_histories
from memos_ray.types import (
    AdapterBlob,
    AdapterImported,
    BundleImported,
    BundleKeyInfo,
    Caller,
    MemoryItem,
    ModelIdentity,
    Role,
)

log = logging.getLogger(__name__)
EXPORT_MODEL_WAIT_S = 5.0  # the manifest names the server's model when the Scheduler knows it by then
IMPORT_MODEL_WAIT_S = 60.0  # an adapter to activate needs it: the model workers load in ~20-40 s after a start
EMBED_CHUNK = 256


@dataclass(frozen=True)
class Exported:
    """A bundle file and what it holds (for the audit record)."""

    data: bytes
    digest: str
    memories: int
    versions: int
    adapters: int
    kv_caches: int

    @property
    def details(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "bytes": len(self.data),
            "memories": self.memories,
            "versions": self.versions,
            "adapters": self.adapters,
            "kv_caches": self.kv_caches,
        }


def _why_inactive(adapter: VerifiedAdapter, model: ModelIdentity | None) -> str:
    info = adapter.info
    if not adapter.meta.active:
        return "it was not the active adapter where it was exported"
    if model is not None and not adapter_active_on_import(info.base_model, model):
        return f"trained on base model {info.base_model.key}; this server runs {model.key}"
    if info.stale:
        return f"stale: {info.stale_reason or 'a memory it learned changed'}"
    if info.evaluation is not None and not info.evaluation.passed:
        return f"it failed its exam: {info.evaluation.reason}"
    return "the server's model is not known"


class BundleService:
    def __init__(
        self,
        config: MemosConfig,
        cubes: Cubes,
        adapters: ActorHandle,
        embed: Callable[[list[str]], Awaitable[np.ndarray]],
        redactor: Redactor,
        scheduler: Callable[[], ActorHandle],
    ) -> None:
        """``scheduler``: the Scheduler's handle (it knows the model the workers run; nothing here loads it)."""
        self.config = config
        self.cubes = cubes
        self.adapters = adapters
        self.embed = embed
        self.redactor = redactor
        self.scheduler = scheduler
        self._key: BundleKey | None = None

    # ------------------------------------------------------------ this server

    async def key(self) -> BundleKey:
        """The signing key, loaded once per replica (made on first use; BundleKey.load is safe against a race)."""
        if self._key is None:
            gov = self.config.governance
            path = gov.bundle_key_file or self.config.storage.data_dir / "bundle.key"
            self._key = await asyncio.to_thread(BundleKey.load, path)
        return self._key

    async def public_key(self) -> BundleKeyInfo:
        key = await self.key()
        return BundleKeyInfo(public_key=key.public_key_hex, key_id=key.key_id)

    @property
    def server_name(self) -> str:
        serve = self.config.serve
        if serve.server_name:
            return serve.server_name
        host = socket.getfqdn() if serve.host in ("0.0.0.0", "::") else serve.host
        return f"http://{host}:{serve.port}"

    async def _model(self, timeout_s: float) -> ModelIdentity:
        """The base model this server's workers run, as the Scheduler knows it (asyncio.TimeoutError past
        ``timeout_s``)."""
        return await asyncio.wait_for(call(self.scheduler(), Scheduler.ready), timeout_s)

    # ------------------------------------------------------------ export

    async def export(self, who: Caller, cube_id: str) -> Exported:
        """The cube as one signed bundle: read role (every version is readable by a reader through a memory's
        history). The cube's grants stay here; adapters travel with their weights; KV caches as metadata only."""
        cube = await self.cubes.open(cube_id, who, Role.read)
        meta = await cube.call(CubeHost.meta)
        versions = await cube.call(CubeHost.all_versions)
        blobs = await call(self.adapters, Adapters.export_blobs, cube_id)
        ids = {v.id for v in versions}
        kv = await asyncio.to_thread(cube_kv_entries, self.config.storage.data_dir / "kv", ids)
        try:
            model: ModelIdentity | None = await self._model(EXPORT_MODEL_WAIT_S)
        except Exception as exc:  # not known yet (or no Scheduler): the manifest says none
            log.info("exporting cube %s without the server's model: %r", cube_id, exc)
            model = None
        contents = BundleContents(
            cube=meta.model_copy(update={"grants": []}),
            memories=versions,
            exported_by=who.principal,
            exported_from=self.server_name,
            model=model,
            adapters=[AdapterExport(info=b.info, weights=b.weights, active=b.active) for b in blobs],
            kv_caches=kv,
        )
        data = await asyncio.to_thread(write_bundle, contents, await self.key())
        return Exported(data, manifest_digest(data), len(ids), len(versions), len(blobs), len(kv))

    # ------------------------------------------------------------ import

    def _redact(self, items: list[MemoryItem], own_keys: set[str]) -> tuple[list[MemoryItem], int]:
        """Each version masked as an ingest would mask it (not the import's own metadata keys), what was masked
        added to its provenance; and how many versions were."""
        out, redacted = [], 0
        for item in items:
            masked, found = self.redactor.apply(item, keep=own_keys)
            if found:
                redacted += 1
                counts = Counter(item.provenance.redactions) + Counter(found)
                masked = masked.model_copy(
                    update={"provenance": item.provenance.model_copy(update={"redactions": dict(counts)})}
                )
            out.append(masked)
        return out, redacted

    async def _vectors(self, latest: list[MemoryItem]) -> np.ndarray:
        texts = [index_text(m.text, m.provenance.speaker) for m in latest]
        if not texts:
            return np.zeros((0, self.config.embedder.dim), dtype=np.float32)
        parts = [await self.embed(texts[i : i + EMBED_CHUNK]) for i in range(0, len(texts), EMBED_CHUNK)]
        return np.concatenate(parts)

    async def _server_model_for(self, adapters: list[VerifiedAdapter]) -> ModelIdentity | None:
        """The server's model, when an adapter may be activated (it was active where it came from)."""
        if not any(a.meta.active for a in adapters):
            return None
        try:
            return await self._model(IMPORT_MODEL_WAIT_S)
        except TimeoutError as exc:
            raise Unavailable(
                "the server's model is not loaded yet: an adapter's base model cannot be checked; retry",
                {"retry": True},
            ) from exc

    async def import_bundle(self, who: Caller, cube_id: str, data: bytes) -> BundleImported:
        """Import a bundle into an existing cube (write role). Refused, with nothing written: a bundle that does
        not verify (4xx naming the problem), a signer not in ``governance.bundle_trusted_keys`` when that is set,
        memories the cube holds already (409: this bundle was imported here before), a quota (429)."""
        cube = await self.cubes.open(cube_id, who, Role.write)  # 404/403 before the bundle is even read
        trusted = set(self.config.governance.bundle_trusted_keys) or None
        bundle = await asyncio.to_thread(read_bundle, data, self.config.serve.max_bundle_bytes, trusted)
        mapped = map_memories(bundle, cube_id, imported_by=who.principal)
        new_ids = sorted(mapped.id_map.values())
        held = await cube.call(CubeHost.held, new_ids) if new_ids else []
        if held:
            raise Conflict(
                f"bundle {bundle.digest[:12]} was imported into cube {cube_id} already "
                f"({len(held)} of its {len(new_ids)} memories are here): nothing was imported",
                {"cube_id": cube_id, "memory_ids": held[:20], "held": len(held), "problem": "already_imported"},
            )
        origin = ImportOrigin.of(bundle, who.principal)
        items, redacted = self._redact(mapped.items, set(origin.metadata("").keys()))
        model = await self._server_model_for(bundle.adapters)
        histories = version_histories(items, cube_id)
        memory_ids = sorted(histories)
        vecs = await self._vectors([histories[m][-1] for m in memory_ids])
        if items:
            await cube.call(CubeHost.import_versions, items, memory_ids, vecs)
        active = [model is not None and should_activate(a, model) for a in bundle.adapters]
        blobs = [
            AdapterBlob(info=a.info, weights=a.weights, active=on)
            for a, on in zip(bundle.adapters, active, strict=True)
        ]
        infos = await call(self.adapters, Adapters.import_blobs, cube_id, blobs, mapped.id_map) if blobs else []
        adapters = [
            AdapterImported(
                id=info.id,
                from_id=a.info.id,
                version=info.version,
                base_model=info.base_model,
                active=on,
                reason="" if on else _why_inactive(a, model),
            )
            for a, info, on in zip(bundle.adapters, infos, active, strict=True)
        ]
        m = bundle.manifest
        return BundleImported(
            cube_id=cube_id,
            memories=len(histories),
            versions=len(items),
            adapters=adapters,
            adapters_inactive=sum(not a.active for a in adapters),
            kv_caches=m.counts.kv_caches,
            id_map=mapped.id_map,
            dropped_refs=mapped.dropped_refs,
            redacted=redacted,
            signer_key_id=m.signer_key_id,
            exported_from=m.exported_from,
            exported_by=m.exported_by,
            exported_at=m.exported_at,
            from_cube=m.cube.id,
            digest=bundle.digest,
        )


__all__ = ["BundleService", "Exported"]
