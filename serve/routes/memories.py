"""Memories: add (one, a batch, or chat messages through the MemReader), list, read, update, delete,
purge, history. Redaction runs here, before anything is embedded or stored; what a change must reach
beyond the cube (caches, adapters) is the cube actor's cascade, not this layer's."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response, status

from actors.cube import CubeHost
from memos_ray.plaintext.reader import read_messages
from memos_ray.plaintext.text import index_text
from memos_ray.types import (
    AddResult,
    AuditAction,
    Caller,
    Id,
    LifecycleState,
    MemoryBatchCreate,
    MemoryCreate,
    MemoryItem,
    MemoryKind,
    MemoryList,
    MemoryUpdate,
    MessagesCreate,
    Role,
)
from serve.auth import Auth, act, record, shielded
from serve.services import Services, Svc

router = APIRouter(tags=["memories"])
ADD = act(AuditAction.memory_add)


async def _add(
    request: Request, svc: Services, who: Caller, cube_id: str, items: list[MemoryCreate]
) -> list[MemoryItem]:
    """Redact, embed, write; one audit record per memory (redactions recorded with what was masked)."""
    cube = await svc.cubes.open(cube_id, who, Role.write)  # 404/403 before spending an embedding
    masked = [svc.redactor.apply(m) for m in items]
    items = [m for m, _ in masked]
    found = [f for _, f in masked]
    vecs = await svc.embed([index_text(m.text, m.source.speaker) for m in items])
    added = await cube.call(CubeHost.add, items, vecs, who.principal, found)
    details = [
        {"source": m.provenance.source_type.value, **({"redacted": f} if f else {})}
        for m, f in zip(added, found, strict=True)
    ]
    await record(request, cube_id=cube_id, memory_ids=[m.id for m in added], details=details, status=201)
    return added


@router.post("/v1/cubes/{cube_id}/memories", status_code=status.HTTP_201_CREATED, dependencies=[ADD])
@shielded
async def add_memory(
    request: Request, cube_id: Id, req: MemoryCreate, who: Caller = Auth, svc: Services = Svc
) -> MemoryItem:
    return (await _add(request, svc, who, cube_id, [req]))[0]


@router.post("/v1/cubes/{cube_id}/memories/batch", status_code=status.HTTP_201_CREATED, dependencies=[ADD])
@shielded
async def add_memories(
    request: Request, cube_id: Id, req: MemoryBatchCreate, who: Caller = Auth, svc: Services = Svc
) -> AddResult:
    items = await _add(request, svc, who, cube_id, req.items)
    return AddResult(items=[i.ref for i in items])


@router.post("/v1/cubes/{cube_id}/messages", status_code=status.HTTP_201_CREATED, dependencies=[ADD])
@shielded
async def add_messages(
    request: Request, cube_id: Id, req: MessagesCreate, who: Caller = Auth, svc: Services = Svc
) -> AddResult:
    req, masked = svc.redactor.messages(req)  # before splitting: no secret straddles two chunks
    items = await _add(request, svc, who, cube_id, read_messages(req))
    if any(masked):
        events = [
            {"message_index": i, "message_id": m.id, "redacted": found}
            for i, (m, found) in enumerate(zip(req.messages, masked, strict=True))
            if found
        ]
        await record(request, cube_id=cube_id, action=AuditAction.memory_redact, details=events, status=201)
    return AddResult(items=[i.ref for i in items])


@router.get("/v1/cubes/{cube_id}/memories", dependencies=[act(AuditAction.memory_read)])
async def list_memories(
    cube_id: Id,
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=1000),
    state: list[LifecycleState] = Query([LifecycleState.active]),
    kind: list[MemoryKind] = Query([]),
    tag: str | None = Query(None, max_length=64),
    who: Caller = Auth,
    svc: Services = Svc,
) -> MemoryList:
    cube = await svc.cubes.open(cube_id, who, Role.read)
    return await cube.call(CubeHost.list, offset, limit, state, kind, tag)


@router.get("/v1/cubes/{cube_id}/memories/{memory_id}", dependencies=[act(AuditAction.memory_read)])
async def get_memory(
    cube_id: Id, memory_id: Id, version: int | None = Query(None, ge=1), who: Caller = Auth, svc: Services = Svc
) -> MemoryItem:
    cube = await svc.cubes.open(cube_id, who, Role.read)
    return await cube.call(CubeHost.get, memory_id, version)


@router.patch("/v1/cubes/{cube_id}/memories/{memory_id}", dependencies=[act(AuditAction.memory_update)])
@shielded
async def update_memory(
    request: Request, cube_id: Id, memory_id: Id, req: MemoryUpdate, who: Caller = Auth, svc: Services = Svc
) -> MemoryItem:
    req, found = svc.redactor.apply(req)
    cube = await svc.cubes.open(cube_id, who, Role.write)
    vec = None
    if req.text is not None:
        cur = await cube.call(CubeHost.get, memory_id, None)
        vec = (await svc.embed([index_text(req.text, cur.provenance.speaker)]))[0]
    item = await cube.call(CubeHost.update, memory_id, req, vec, who.principal, found)
    details = {"version": item.version, **({"redacted": found} if found else {})}
    await record(request, cube_id=cube_id, memory_ids=[memory_id], details=details)
    return item


@router.delete("/v1/cubes/{cube_id}/memories/{memory_id}", dependencies=[act(AuditAction.memory_delete)])
@shielded
async def delete_memory(
    request: Request,
    cube_id: Id,
    memory_id: Id,
    expected_version: int | None = Query(None, ge=1),
    who: Caller = Auth,
    svc: Services = Svc,
) -> MemoryItem:
    cube = await svc.cubes.open(cube_id, who, Role.write)
    item = await cube.call(CubeHost.delete, memory_id, expected_version, who.principal)
    await record(request, cube_id=cube_id, memory_ids=[memory_id], details={"version": item.version})
    return item


@router.post(
    "/v1/cubes/{cube_id}/memories/{memory_id}/purge",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[act(AuditAction.memory_purge)],
)
@shielded
async def purge_memory(
    request: Request, cube_id: Id, memory_id: Id, who: Caller = Auth, svc: Services = Svc
) -> Response:
    """Erase every version of a memory (irreversible; admin role), and everything built from it: the answer
    comes once its caches are dropped and the adapters that learned it are out of use (503 until then)."""
    cube = await svc.cubes.open(cube_id, who, Role.admin)
    await cube.call(CubeHost.purge, memory_id)
    await record(request, cube_id=cube_id, memory_ids=[memory_id], status=204)
    return Response(status_code=204)


@router.get("/v1/cubes/{cube_id}/memories/{memory_id}/history", dependencies=[act(AuditAction.memory_read)])
async def memory_history(cube_id: Id, memory_id: Id, who: Caller = Auth, svc: Services = Svc) -> list[MemoryItem]:
    cube = await svc.cubes.open(cube_id, who, Role.read)
    return await cube.call(CubeHost.history, memory_id)
