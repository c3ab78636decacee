"""Search one cube, several, or every cube the caller may read."""

from __future__ import annotations

from fastapi import APIRouter

from memos_ray.types import AuditAction, Caller, Id, SearchQuery, SearchRequest, SearchResponse
from serve.auth import Auth, act
from serve.services import Services, Svc

router = APIRouter(tags=["search"], dependencies=[act(AuditAction.search)])


@router.post("/v1/cubes/{cube_id}/search")
async def search_cube(cube_id: Id, req: SearchQuery, who: Caller = Auth, svc: Services = Svc) -> SearchResponse:
    return await svc.cubes.search(who, [cube_id], req, svc.embed)


@router.post("/v1/search")
async def search_cubes(req: SearchRequest, who: Caller = Auth, svc: Services = Svc) -> SearchResponse:
    """Search several cubes: the ones named (each must be readable), or every cube the caller may read."""
    query = SearchQuery.model_validate(req.model_dump(exclude={"cube_ids"}))
    cube_ids = list(dict.fromkeys(req.cube_ids)) if req.cube_ids is not None else None
    return await svc.cubes.search(who, cube_ids, query, svc.embed)
