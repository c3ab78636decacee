"""Identities and keys: administrators manage everyone; a user manages itself and its agents. A key is
shown once, when issued."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, status

from actors.calls import call
from actors.identity import Identity
from memos_ray.types import (
    ApiKeyInfo,
    AuditAction,
    Caller,
    Id,
    IssuedKey,
    KeyCreate,
    Principal,
    PrincipalCreate,
    PrincipalUpdate,
)
from serve.auth import Auth, act, record, shielded
from serve.services import Services, Svc

router = APIRouter(tags=["identity"])
READ = act(AuditAction.identity_read)


@router.get("/v1/whoami", dependencies=[READ])
async def whoami(who: Caller = Auth) -> Caller:
    return who


@router.post("/v1/principals", status_code=status.HTTP_201_CREATED, dependencies=[act(AuditAction.principal_create)])
@shielded
async def create_principal(
    request: Request, req: PrincipalCreate, who: Caller = Auth, svc: Services = Svc
) -> Principal:
    created = await call(svc.identity, Identity.create_principal, req, who)
    await record(request, status=201, details={"principal": created.id, "kind": created.kind})
    return created


@router.get("/v1/principals", dependencies=[READ])
async def list_principals(who: Caller = Auth, svc: Services = Svc) -> list[Principal]:
    return await call(svc.identity, Identity.list_principals, who)


@router.get("/v1/principals/{principal_id}", dependencies=[READ])
async def get_principal(principal_id: Id, who: Caller = Auth, svc: Services = Svc) -> Principal:
    return await call(svc.identity, Identity.get_principal, principal_id, who)


@router.patch("/v1/principals/{principal_id}", dependencies=[act(AuditAction.principal_update)])
@shielded
async def update_principal(
    request: Request, principal_id: Id, req: PrincipalUpdate, who: Caller = Auth, svc: Services = Svc
) -> Principal:
    updated = await call(svc.identity, Identity.update_principal, principal_id, req, who)
    await record(request, details={"principal": principal_id, **req.model_dump(exclude_none=True)})
    return updated


@router.post("/v1/keys", status_code=status.HTTP_201_CREATED, dependencies=[act(AuditAction.key_issue)])
@shielded
async def issue_key(request: Request, req: KeyCreate, who: Caller = Auth, svc: Services = Svc) -> IssuedKey:
    issued = await call(svc.identity, Identity.issue_key, req, who)
    await record(request, status=201, details={"key_id": issued.info.key_id, "principal": req.principal})
    return issued


@router.get("/v1/keys", dependencies=[READ])
async def list_keys(
    principal: Id | None = Query(None, description="one principal's keys"), who: Caller = Auth, svc: Services = Svc
) -> list[ApiKeyInfo]:
    return await call(svc.identity, Identity.list_keys, who, principal)


@router.delete("/v1/keys/{key_id}", dependencies=[act(AuditAction.key_revoke)])
@shielded
async def revoke_key(request: Request, key_id: Id, who: Caller = Auth, svc: Services = Svc) -> ApiKeyInfo:
    revoked = await call(svc.identity, Identity.revoke_key, key_id, who)
    await record(request, details={"key_id": key_id, "principal": revoked.principal})
    return revoked
