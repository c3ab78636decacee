"""Health (no key) and the cluster's status (administrators)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from actors.calls import call
from actors.directory import Directory
from actors.embedder import Embedder
from actors.memscheduler import MemScheduler
from memos_ray import __version__
from memos_ray.errors import Forbidden
from memos_ray.types import AuditAction, Caller, Health, Status
from serve.auth import Auth, act
from serve.services import Services, Svc

router = APIRouter(tags=["system"])


@router.get("/v1/health")
async def health() -> Health:
    """Liveness; the one route that needs no key."""
    return Health(status="ok", version=__version__)


@router.get("/v1/status", dependencies=[act(AuditAction.status)])
async def get_status(who: Caller = Auth, svc: Services = Svc) -> Status:
    """Cluster-wide counters: for administrators (they span every tenant)."""
    if not who.admin:
        raise Forbidden("the cluster's status is for administrators", {"principal": who.principal})
    directory, embedder, scheduler = await asyncio.gather(
        call(svc.directory, Directory.stats),
        call(svc.embedder, Embedder.stats),
        call(svc.memscheduler, MemScheduler.status),
    )
    return Status(version=__version__, directory=directory, embedder=embedder, scheduler=scheduler)
