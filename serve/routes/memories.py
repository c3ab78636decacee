"""Memories: add (one, a batch, or chat messages through the MemReader), list, read, update, delete,
purge, history. The rules are below this layer: redaction and the write in :class:`actors.memories.
MemoryService`, what a change must reach beyond the cube (caches, adapters) in the cube actor's cascade;
the routes authorize, call and audit."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response, status

from actors.cube import CubeHost
from actors.memories import Written
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
    Purged,
    Role,
)
from serve.auth import Auth, act, record, shielded
from serve.idempotency import keyed
from serve.services import Services, Svc

router = APIRouter(tags=["memories"])
ADD = act(AuditAction.memory_add)


async def _add(request: Request, cube_id: str, written: Written) -> None:
    """One audit record per memory (redactions recorded with what was masked, never the value)."""
    details = [
        {
            "source": m.provenance.source_type.value,
            **({"redacted": f} if f else {}),
            **({"duplicate_of_existing": True} if i in written.duplicates else {}),
        }
        for i, (m, f) in enumerate(zip(written.items, written.redacted, strict=True))
    ]
    await record(request, cube_id=cube_id, memory_ids=[m.id for m in written.items], details=details, status=201)


def _key(request: Request) -> tuple[str, float] | None:
    """An Idempotency-Key's seed: the memories of a keyed add get ids made from it (a retry finds them)."""
    k = keyed(request)
    return None if k is None else (k.seed, k.first_at)


@router.post("/v1/cubes/{cube_id}/memories", status_code=status.HTTP_201_CREATED, dependencies=[ADD])
@shielded
async def add_memory(
    request: Request, response: Response, cube_id: Id, req: MemoryCreate, who: Caller = Auth, svc: Services = Svc
) -> MemoryItem:
    """201 with the new memory; 200 with the existing one when the cube's ingest dedup found it already held."""
    written = await svc.memories.add(who, cube_id, [req], _key(request))
    await _add(request, cube_id, written)
    if written.duplicates:
        response.status_code = status.HTTP_200_OK
    return written.items[0]


@router.post("/v1/cubes/{cube_id}/memories/batch", status_code=status.HTTP_201_CREATED, dependencies=[ADD])
@shielded
async def add_memories(
    request: Request, cube_id: Id, req: MemoryBatchCreate, who: Caller = Auth, svc: Services = Svc
) -> AddResult:
    written = await svc.memories.add(who, cube_id, req.items, _key(request))
    await _add(request, cube_id, written)
    return AddResult(items=[i.ref for i in written.items], duplicates=written.duplicates)


@router.post("/v1/cubes/{cube_id}/messages", status_code=status.HTTP_201_CREATED, dependencies=[ADD])
@shielded
async def add_messages(
    request: Request, cube_id: Id, req: MessagesCreate, who: Caller = Auth, svc: Services = Svc
) -> AddResult:
    written = await svc.memories.add_messages(who, cube_id, req, _key(request))
    await _add(request, cube_id, written)
    if any(written.messages_redacted):
        events = [
            {"message_index": i, "message_id": m.id, "redacted": found}
            for i, (m, found) in enumerate(zip(req.messages, written.messages_redacted, strict=True))
            if found
        ]
        await record(request, cube_id=cube_id, action=AuditAction.memory_redact, details=events, status=201)
    return AddResult(items=[i.ref for i in written.items], duplicates=written.duplicates)


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
    item, found = await svc.memories.update(who, cube_id, memory_id, req)
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


@router.post("/v1/cubes/{cube_id}/memories/{memory_id}/purge", dependencies=[act(AuditAction.memory_purge)])
@shielded
async def purge_memory(request: Request, cube_id: Id, memory_id: Id, who: Caller = Auth, svc: Services = Svc) -> Purged:
    """Erase a memory (irreversible; admin role) with its near-duplicates and the memories made from it, from
    every file, and everything built from them: the answer comes once their caches are dropped and the
    adapters that learned them are withdrawn (503 until then). The audit keeps that it happened, never the text."""
    cube = await svc.cubes.open(cube_id, who, Role.admin)
    purged = await cube.call(CubeHost.purge, memory_id)
    await record(request, cube_id=cube_id, memory_ids=purged.memory_ids)
    return purged


@router.get("/v1/cubes/{cube_id}/memories/{memory_id}/history", dependencies=[act(AuditAction.memory_read)])
async def memory_history(cube_id: Id, memory_id: Id, who: Caller = Auth, svc: Services = Svc) -> list[MemoryItem]:
    cube = await svc.cubes.open(cube_id, who, Role.read)
    return await cube.call(CubeHost.history, memory_id)
