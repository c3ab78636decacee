"""Parametric memory: train a LoRA adapter from a cube's memories, follow the job, list a cube's
adapter versions, choose the active one, delete one.

Training runs off the request path (a Ray task, see ``actors/adapters.py``): the POST answers 202
with the job, and ``GET /v1/jobs/{id}`` reports its state, percent and loss. Which memories train an
adapter is the cube's rule (``MemCube.training_set``). Training needs the write role on the cube;
choosing the active adapter too; deleting one, admin.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from actors.adapters import Adapters
from actors.calls import call
from actors.cube import CubeHost
from actors.directory import Directory
from memos_ray.errors import JobNotFound, MemosError
from memos_ray.types import ActiveAdapter, AdapterList, AuditAction, Caller, Id, Role, TrainingJob, TrainRequest
from serve.auth import Auth, act, record, shielded
from serve.services import Services, Svc

router = APIRouter(tags=["adapters"])
READ = act(AuditAction.adapter_read)


@router.post(
    "/v1/cubes/{cube_id}/adapters",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[act(AuditAction.adapter_train)],
)
@shielded
async def train_adapter(
    request: Request, cube_id: Id, req: TrainRequest, who: Caller = Auth, svc: Services = Svc
) -> TrainingJob:
    """Start training an adapter from the cube's active memories (facts by default, or a selection)."""
    cube = await svc.cubes.open(cube_id, who, Role.write)
    chosen = await cube.call(CubeHost.training_set, req)
    job = await call(
        svc.adapters,
        Adapters.start_training,
        cube_id,
        [m.text for m in chosen],
        [m.ref for m in chosen],
        req.settings,
        req.activate,
        who.principal,
    )
    details = {"job_id": job.id, "memories": len(chosen), "settings": req.settings.model_dump()}
    await record(request, cube_id=cube_id, details=details, status=202)
    return job


@router.get("/v1/jobs/{job_id}", dependencies=[READ])
async def training_job(job_id: Id, who: Caller = Auth, svc: Services = Svc) -> TrainingJob:
    """A training job's state, step, percent and loss (read role on its cube)."""
    job = await call(svc.adapters, Adapters.job, job_id)
    try:
        await call(svc.directory, Directory.authorize, job.cube_id, who, Role.read)
    except MemosError:  # someone else's job, or its cube is gone: it does not exist for this caller
        raise JobNotFound(f"job {job_id} not found", {"job_id": job_id, "cube_id": job.cube_id}) from None
    return job


@router.get("/v1/cubes/{cube_id}/adapters", dependencies=[READ])
async def list_adapters(cube_id: Id, who: Caller = Auth, svc: Services = Svc) -> AdapterList:
    """The cube's adapter versions (settings, sources, metrics, stale mark) and the active one."""
    await call(svc.directory, Directory.authorize, cube_id, who, Role.read)
    return await call(svc.adapters, Adapters.listing, cube_id)


@router.put("/v1/cubes/{cube_id}/adapters/active", dependencies=[act(AuditAction.adapter_activate)])
@shielded
async def activate_adapter(
    request: Request, cube_id: Id, req: ActiveAdapter, who: Caller = Auth, svc: Services = Svc
) -> AdapterList:
    """Choose the adapter chat runs under for this cube (null: the base model)."""
    await call(svc.directory, Directory.authorize, cube_id, who, Role.write)
    listing = await call(svc.adapters, Adapters.set_active, cube_id, req.adapter_id)
    await record(request, cube_id=cube_id, details={"adapter_id": req.adapter_id})
    return listing


@router.delete(
    "/v1/cubes/{cube_id}/adapters/{adapter_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[act(AuditAction.adapter_delete)],
)
@shielded
async def delete_adapter(
    request: Request, cube_id: Id, adapter_id: Id, who: Caller = Auth, svc: Services = Svc
) -> Response:
    """Delete an adapter version: from disk and from every model worker (admin role)."""
    await call(svc.directory, Directory.authorize, cube_id, who, Role.admin)
    await call(svc.adapters, Adapters.delete, cube_id, adapter_id)
    await record(request, cube_id=cube_id, details={"adapter_id": adapter_id}, status=204)
    return Response(status_code=204)
