"""Portable MemCube bundles: export a cube as one signed file, import one into a cube, and this server's
signing key. The rules are :class:`actors.bundles.BundleService`'s; the routes call it and audit.

- ``GET /v1/cubes/{cube_id}/bundle``: read role (every version is a reader's through a memory's history); the
  file, ``<cube>.memcube``. One ``bundle.export`` record: what it holds and its manifest digest.
- ``POST /v1/cubes/{cube_id}/bundle``: the file as the raw body; write role on an existing cube (a new cube is
  made with ``POST /v1/cubes`` first: who owns it and who may use it are decided there, not by a bundle).
  One ``bundle.import`` record for the bundle (its signer, origin, counts, adapters) and one per memory (its
  new id, and the one it had). A refusal is audited by the error handler like any failed mutation.
- ``GET /v1/bundles/key``: the public key bundles from here are signed with (any caller), to pin elsewhere
  in ``governance.bundle_trusted_keys``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status

from memos_ray.errors import BadRequest
from memos_ray.types import BUNDLE_MEDIA_TYPE, AuditAction, BundleImported, BundleKeyInfo, Caller, Id
from serve.auth import Auth, act, record, shielded
from serve.services import Services, Svc

router = APIRouter(tags=["bundles"])
ACCEPTED = frozenset({BUNDLE_MEDIA_TYPE, "application/octet-stream", "application/zip"})
_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get(
    "/v1/cubes/{cube_id}/bundle",
    dependencies=[act(AuditAction.bundle_export)],
    response_class=Response,
    responses={200: {"description": "the bundle file", "content": {BUNDLE_MEDIA_TYPE: _BINARY}}},
)
@shielded
async def export_bundle(request: Request, cube_id: Id, who: Caller = Auth, svc: Services = Svc) -> Response:
    """The cube as one file signed with this server's key: every version of every memory (deleted and archived
    too) with its provenance, its adapters with their weights and base model, its KV cache metadata."""
    exported = await svc.bundles.export(who, cube_id)
    await record(request, cube_id=cube_id, details=exported.details)
    disposition = f'attachment; filename="{cube_id}.memcube"'
    return Response(exported.data, media_type=BUNDLE_MEDIA_TYPE, headers={"Content-Disposition": disposition})


@router.post(
    "/v1/cubes/{cube_id}/bundle",
    status_code=status.HTTP_201_CREATED,
    dependencies=[act(AuditAction.bundle_import)],
    openapi_extra={
        "requestBody": {"required": True, "content": {t: _BINARY for t in sorted(ACCEPTED)}},
    },
)
@shielded
async def import_bundle(request: Request, cube_id: Id, who: Caller = Auth, svc: Services = Svc) -> BundleImported:
    """Import a bundle (the raw body) into this cube: verified whole first (a tampered or truncated file is a
    4xx naming the problem, and nothing is written); new ids, versions, states and provenance kept, the import
    recorded in each version's ``imported_*`` metadata. 409 when the cube holds this bundle's memories already.
    An adapter trained on another base model than this server's is kept, inactive; KV caches are rebuilt."""
    kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if kind and kind not in ACCEPTED:
        raise BadRequest(
            f"a bundle is sent as {BUNDLE_MEDIA_TYPE} or application/octet-stream, not {kind}",
            {"content_type": kind, "problem": "content_type"},
        )
    imported = await svc.bundles.import_bundle(who, cube_id, await request.body())
    summary: dict[str, Any] = {
        "digest": imported.digest,
        "signer_key_id": imported.signer_key_id,
        "exported_from": imported.exported_from,
        "exported_by": imported.exported_by,
        "from_cube": imported.from_cube,
        "memories": imported.memories,
        "versions": imported.versions,
        "dropped_refs": imported.dropped_refs,
        "redacted": imported.redacted,
        "kv_caches": imported.kv_caches,
        "adapters": [a.model_dump(mode="json", exclude={"base_model"}) for a in imported.adapters],
    }
    await record(request, cube_id=cube_id, details=summary, status=201)
    if imported.id_map:
        ids = sorted(imported.id_map.items(), key=lambda kv: kv[1])
        per = [{"from_id": old, "digest": imported.digest, "signer_key_id": imported.signer_key_id} for old, _ in ids]
        await record(request, cube_id=cube_id, memory_ids=[new for _, new in ids], details=per, status=201)
    return imported


@router.get("/v1/bundles/key", dependencies=[act(AuditAction.bundle_key)])
async def bundle_key(who: Caller = Auth, svc: Services = Svc) -> BundleKeyInfo:
    """This server's bundle signing key (public half) and its key id."""
    return await svc.bundles.public_key()
