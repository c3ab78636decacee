"""Cubes: create, list, read, change (name, description, quotas), share, unshare, delete."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response, status

from actors.calls import call
from actors.directory import Directory
from actors.identity import Identity
from memos_ray.errors import InvalidInput
from memos_ray.types import (
    AuditAction,
    Caller,
    CubeCreate,
    CubeList,
    CubeMeta,
    CubeUpdate,
    Grant,
    GrantRole,
    Id,
    Role,
)
from serve.auth import Auth, act, record, shielded
from serve.services import Services, Svc

router = APIRouter()


@router.post(
    "/v1/cubes", status_code=status.HTTP_201_CREATED, tags=["cubes"], dependencies=[act(AuditAction.cube_create)]
)
@shielded
async def create_cube(request: Request, req: CubeCreate, who: Caller = Auth, svc: Services = Svc) -> CubeMeta:
    """A new cube, owned by the caller."""
    meta = await call(svc.directory, Directory.create_cube, req, who)
    await record(request, cube_id=meta.id, status=201, details={"quotas": req.quotas.model_dump()})
    return meta


@router.get("/v1/cubes", tags=["cubes"], dependencies=[act(AuditAction.cube_read)])
async def list_cubes(
    offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000), who: Caller = Auth, svc: Services = Svc
) -> CubeList:
    """The cubes the caller may read."""
    return await call(svc.directory, Directory.list_cubes, who, offset, limit)


@router.get("/v1/cubes/{cube_id}", tags=["cubes"], dependencies=[act(AuditAction.cube_read)])
async def get_cube(cube_id: Id, who: Caller = Auth, svc: Services = Svc) -> CubeMeta:
    return await call(svc.directory, Directory.get_cube, cube_id, who)


@router.delete(
    "/v1/cubes/{cube_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["cubes"],
    dependencies=[act(AuditAction.cube_delete)],
)
@shielded
async def delete_cube(request: Request, cube_id: Id, who: Caller = Auth, svc: Services = Svc) -> Response:
    """Delete a cube everywhere: its memories, its adapters, the caches built from them (admin role)."""
    await call(svc.directory, Directory.delete_cube, cube_id, who)
    await record(request, cube_id=cube_id, status=204)
    return Response(status_code=204)


@router.patch("/v1/cubes/{cube_id}", tags=["cubes"], dependencies=[act(AuditAction.cube_update)])
@shielded
async def update_cube(
    request: Request, cube_id: Id, req: CubeUpdate, who: Caller = Auth, svc: Services = Svc
) -> CubeMeta:
    meta = await call(svc.directory, Directory.update_cube, cube_id, req, who)
    await record(request, cube_id=cube_id, details=req.model_dump(mode="json", exclude_none=True))
    return meta


@router.put("/v1/cubes/{cube_id}/grants/{principal}", tags=["sharing"], dependencies=[act(AuditAction.cube_share)])
@shielded
async def share(
    request: Request, cube_id: Id, principal: Id, req: GrantRole, who: Caller = Auth, svc: Services = Svc
) -> CubeMeta:
    """Give ``principal`` (a user, agent or team) a role on the cube, replacing its earlier one."""
    await call(svc.directory, Directory.authorize, cube_id, who, Role.admin)  # before saying who exists
    if not await call(svc.identity, Identity.exists, principal):
        raise InvalidInput(f"no principal named {principal}", {"principal": principal})
    meta = await call(svc.directory, Directory.share, cube_id, Grant(principal=principal, role=req.role), who)
    await record(request, cube_id=cube_id, details={"principal": principal, "role": req.role})
    return meta


@router.delete("/v1/cubes/{cube_id}/grants/{principal}", tags=["sharing"], dependencies=[act(AuditAction.cube_unshare)])
@shielded
async def unshare(request: Request, cube_id: Id, principal: Id, who: Caller = Auth, svc: Services = Svc) -> CubeMeta:
    meta = await call(svc.directory, Directory.unshare, cube_id, principal, who)
    await record(request, cube_id=cube_id, details={"principal": principal})
    return meta
