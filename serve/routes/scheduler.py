"""The MemScheduler's face: sessions (prefetch), its decisions, and a cube's usage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from actors.calls import call
from actors.directory import Directory
from actors.memscheduler import MemScheduler
from memos_ray.errors import Forbidden
from memos_ray.types import (
    AuditAction,
    Caller,
    CubeUsage,
    DecisionPage,
    DecisionQuery,
    Id,
    Role,
    SchedulerPolicy,
    Session,
    SessionCreate,
    SweepResult,
)
from serve.auth import Auth, act
from serve.services import Services, Svc

router = APIRouter(tags=["scheduler"])


@router.post("/v1/sessions", status_code=201, dependencies=[act(AuditAction.session_open)])
async def open_session(req: SessionCreate, who: Caller = Auth, svc: Services = Svc) -> Session:
    """An agent starts working on these cubes: their KV prefix (pinned memories and working set) and the
    first cube's adapter are warmed on the worker that will serve them. Read role on every cube."""
    await svc.cubes.authorize(list(req.cube_ids), who, Role.read)
    return await call(svc.memscheduler, MemScheduler.open_session, who.principal, req)


@router.get("/v1/scheduler/decisions", dependencies=[act(AuditAction.scheduler_read)])
async def decisions(q: Annotated[DecisionQuery, Query()], who: Caller = Auth, svc: Services = Svc) -> DecisionPage:
    """What the MemScheduler decided, why, and on which figures: one cube's (read role) or all (administrators)."""
    if q.cube_id is not None:
        await call(svc.directory, Directory.authorize, q.cube_id, who, Role.read)
    elif not who.admin:
        raise Forbidden("every cube's decisions are for administrators; name a cube_id", {"principal": who.principal})
    return await call(svc.memscheduler, MemScheduler.decisions, q.after_seq, q.limit, q.kind, q.cube_id)


def _require_admin(who: Caller) -> None:
    if not who.admin:
        raise Forbidden("the scheduling policy is for administrators", {"principal": who.principal})


@router.put("/v1/scheduler/policy", dependencies=[act(AuditAction.scheduler_update)])
async def set_policy(req: SchedulerPolicy, who: Caller = Auth, svc: Services = Svc) -> SchedulerPolicy:
    """Turn the policy on or off (off: no working sets, prefetch or demotion; pinned prefixes stay)."""
    _require_admin(who)
    return SchedulerPolicy(enabled=await call(svc.memscheduler, MemScheduler.set_enabled, req.enabled, who.principal))


@router.post("/v1/scheduler/sweep", dependencies=[act(AuditAction.scheduler_update)])
async def sweep(who: Caller = Auth, svc: Services = Svc) -> SweepResult:
    """Run one sweep now instead of waiting for the next: promotion and demotion of every active cube, the
    lifecycle sweep (expire, archive, merge) of the cubes that have a policy, and parametric promotion."""
    _require_admin(who)
    decisions = await call(svc.memscheduler, MemScheduler.sweep)
    lifecycle = await call(svc.memscheduler, MemScheduler.sweep_lifecycle)
    job = await call(svc.memscheduler, MemScheduler.sweep_parametric)
    return SweepResult(decisions=decisions, lifecycle=lifecycle, training_job=job)


@router.get("/v1/cubes/{cube_id}/usage", dependencies=[act(AuditAction.cube_read)])
async def cube_usage(
    cube_id: Id, limit: Annotated[int, Query(ge=1, le=1_000)] = 100, who: Caller = Auth, svc: Services = Svc
) -> CubeUsage:
    """How the cube's memories are used (retrievals, prompt and prefix uses, agents, heat), most used first,
    and its working set. Kept beside the memories: a version never changes when it is used."""
    await call(svc.directory, Directory.authorize, cube_id, who, Role.read)
    return await call(svc.memscheduler, MemScheduler.usage_of, cube_id, limit)
