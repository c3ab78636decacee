"""The audit log: a cube's records for its admins; everything, and the hash chain's check, for
administrators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from actors.audit import AuditLog
from actors.calls import call
from actors.directory import Directory
from memos_ray.errors import Forbidden
from memos_ray.types import AuditAction, AuditFilter, AuditPage, AuditQuery, AuditVerification, Caller, Id, Role
from serve.auth import Auth, act
from serve.services import Services, Svc

router = APIRouter(tags=["audit"], dependencies=[act(AuditAction.audit_read)])


def _require_admin(who: Caller) -> None:
    if not who.admin:
        raise Forbidden("only an administrator may do this", {"principal": who.principal})


@router.get("/v1/cubes/{cube_id}/audit")
async def cube_audit(
    cube_id: Id, q: Annotated[AuditFilter, Query()], who: Caller = Auth, svc: Services = Svc
) -> AuditPage:
    """The cube's records (its mutations and the accesses to it that were denied); admin role."""
    await call(svc.directory, Directory.authorize, cube_id, who, Role.admin)
    return await call(svc.audit, AuditLog.query, AuditQuery(**q.model_dump(), cube_id=cube_id))


@router.get("/v1/audit")
async def audit_log(q: Annotated[AuditQuery, Query()], who: Caller = Auth, svc: Services = Svc) -> AuditPage:
    _require_admin(who)
    return await call(svc.audit, AuditLog.query, q)


@router.get("/v1/audit/verify")
async def verify_audit(who: Caller = Auth, svc: Services = Svc) -> AuditVerification:
    _require_admin(who)
    return await call(svc.audit, AuditLog.verify)
