"""Governance routes: identities and keys, sharing, the audit log, and a cube's change feed.

- ``/v1/principals`` and ``/v1/keys``: administrators manage everyone; a user manages itself and
  its agents. A key is shown once, when issued.
- ``/v1/cubes/{id}/grants/{principal}``: share (PUT a role) and revoke (DELETE); admin role.
- ``/v1/cubes/{id}/audit``: the cube's audit records, for its admins; ``/v1/audit`` for
  administrators, with ``/v1/audit/verify`` to check the hash chain.
- ``/v1/cubes/{id}/changes``: Server-Sent Events, one ``change`` event per new version (``id`` is
  the cube's seq, so ``Last-Event-ID`` resumes). The key and the read role are checked again
  on every poll, so revoking either ends the stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Header, Query, Request, status
from fastapi.responses import StreamingResponse

from memos_ray.errors import Forbidden, InvalidInput, MemosError
from memos_ray.types import (
    ApiKeyInfo,
    AuditPage,
    AuditQuery,
    AuditVerification,
    Caller,
    ChangeBatch,
    CubeMeta,
    CubeUpdate,
    Grant,
    GrantRole,
    Id,
    IssuedKey,
    KeyCreate,
    Principal,
    PrincipalCreate,
    PrincipalUpdate,
    Role,
)
from serve.base import Auth, IngressBase, _audit_failure, act, app, shielded
from serve.errors import error_body, status_of, unwrap

FEED_POLL_S = 2.0  # a subscriber's key and role are re-checked at least this often


def _require_admin(who: Caller) -> None:
    if not who.admin:
        raise Forbidden("only an administrator may do this", {"principal": who.principal})


class GovernanceRoutes(IngressBase):
    # ------------------------------------------------------------ identities and keys

    @app.get("/v1/whoami", tags=["identity"], dependencies=[act("identity.read")])
    async def whoami(self, who: Caller = Auth) -> Caller:
        return who

    @app.post(
        "/v1/principals",
        status_code=status.HTTP_201_CREATED,
        tags=["identity"],
        dependencies=[act("principal.create")],
    )
    @shielded
    async def create_principal(self, request: Request, req: PrincipalCreate, who: Caller = Auth) -> Principal:
        created: Principal = await self._call(self.identity, "create_principal", req, who)
        await self._audit(request, status=201, details={"principal": created.id, "kind": created.kind})
        return created

    @app.get("/v1/principals", tags=["identity"], dependencies=[act("identity.read")])
    async def list_principals(self, who: Caller = Auth) -> list[Principal]:
        return await self._call(self.identity, "list_principals", who)

    @app.get("/v1/principals/{principal_id}", tags=["identity"], dependencies=[act("identity.read")])
    async def get_principal(self, principal_id: Id, who: Caller = Auth) -> Principal:
        return await self._call(self.identity, "get_principal", principal_id, who)

    @app.patch("/v1/principals/{principal_id}", tags=["identity"], dependencies=[act("principal.update")])
    @shielded
    async def update_principal(
        self, request: Request, principal_id: Id, req: PrincipalUpdate, who: Caller = Auth
    ) -> Principal:
        updated: Principal = await self._call(self.identity, "update_principal", principal_id, req, who)
        await self._audit(request, details={"principal": principal_id, **req.model_dump(exclude_none=True)})
        return updated

    @app.post("/v1/keys", status_code=status.HTTP_201_CREATED, tags=["identity"], dependencies=[act("key.issue")])
    @shielded
    async def issue_key(self, request: Request, req: KeyCreate, who: Caller = Auth) -> IssuedKey:
        issued: IssuedKey = await self._call(self.identity, "issue_key", req, who)
        await self._audit(request, status=201, details={"key_id": issued.info.key_id, "principal": req.principal})
        return issued

    @app.get("/v1/keys", tags=["identity"], dependencies=[act("identity.read")])
    async def list_keys(
        self, principal: Id | None = Query(None, description="one principal's keys"), who: Caller = Auth
    ) -> list[ApiKeyInfo]:
        return await self._call(self.identity, "list_keys", who, principal)

    @app.delete("/v1/keys/{key_id}", tags=["identity"], dependencies=[act("key.revoke")])
    @shielded
    async def revoke_key(self, request: Request, key_id: Id, who: Caller = Auth) -> ApiKeyInfo:
        revoked: ApiKeyInfo = await self._call(self.identity, "revoke_key", key_id, who)
        await self._audit(request, details={"key_id": key_id, "principal": revoked.principal})
        return revoked

    # ------------------------------------------------------------ cubes: settings and sharing

    @app.patch("/v1/cubes/{cube_id}", tags=["cubes"], dependencies=[act("cube.update")])
    @shielded
    async def update_cube(self, request: Request, cube_id: Id, req: CubeUpdate, who: Caller = Auth) -> CubeMeta:
        meta: CubeMeta = await self._call(self.directory, "update_cube", cube_id, req, who)
        await self._audit(request, cube_id=cube_id, details=req.model_dump(mode="json", exclude_none=True))
        return meta

    @app.put("/v1/cubes/{cube_id}/grants/{principal}", tags=["sharing"], dependencies=[act("cube.share")])
    @shielded
    async def share(self, request: Request, cube_id: Id, principal: Id, req: GrantRole, who: Caller = Auth) -> CubeMeta:
        """Give ``principal`` (a user, agent or team) a role on the cube, replacing its earlier one."""
        await self._call(self.directory, "authorize", cube_id, who, Role.admin)  # before saying who exists
        if not await self._call(self.identity, "exists", principal):
            raise InvalidInput(f"no principal named {principal}", {"principal": principal})
        meta: CubeMeta = await self._call(
            self.directory, "share", cube_id, Grant(principal=principal, role=req.role), who
        )
        await self._audit(request, cube_id=cube_id, details={"principal": principal, "role": req.role})
        return meta

    @app.delete("/v1/cubes/{cube_id}/grants/{principal}", tags=["sharing"], dependencies=[act("cube.unshare")])
    @shielded
    async def unshare(self, request: Request, cube_id: Id, principal: Id, who: Caller = Auth) -> CubeMeta:
        meta: CubeMeta = await self._call(self.directory, "unshare", cube_id, principal, who)
        await self._audit(request, cube_id=cube_id, details={"principal": principal})
        return meta

    # ------------------------------------------------------------ audit

    @app.get("/v1/cubes/{cube_id}/audit", tags=["audit"], dependencies=[act("audit.read")])
    async def cube_audit(self, cube_id: Id, q: Annotated[AuditQuery, Query()], who: Caller = Auth) -> AuditPage:
        """The cube's records (its mutations and the accesses to it that were denied); admin role."""
        await self._call(self.directory, "authorize", cube_id, who, Role.admin)
        return await self.audit.query.remote(q.model_copy(update={"cube_id": cube_id}))

    @app.get("/v1/audit", tags=["audit"], dependencies=[act("audit.read")])
    async def audit_log(self, q: Annotated[AuditQuery, Query()], who: Caller = Auth) -> AuditPage:
        _require_admin(who)
        return await self.audit.query.remote(q)

    @app.get("/v1/audit/verify", tags=["audit"], dependencies=[act("audit.read")])
    async def verify_audit(self, who: Caller = Auth) -> AuditVerification:
        _require_admin(who)
        return await self.audit.verify.remote()

    # ------------------------------------------------------------ change feed

    @app.get("/v1/cubes/{cube_id}/changes", tags=["changes"], dependencies=[act("changes")])
    async def changes(
        self,
        request: Request,
        cube_id: Id,
        after_seq: int | None = Query(None, ge=0, description="replay changes after this seq; default: from now"),
        last_event_id: str | None = Header(None, description="resume after this event id (SSE reconnect)"),
        who: Caller = Auth,
    ) -> StreamingResponse:
        """Server-Sent Events: ``change`` events (JSON :class:`ChangeEvent`) as agents write to the cube."""
        if after_seq is None and last_event_id is not None:
            if not last_event_id.isdigit():
                raise InvalidInput("Last-Event-ID must be a cube seq (an integer)")
            after_seq = int(last_event_id)
        first: ChangeBatch = await self._cube(who, cube_id, Role.read, "wait_changes", after_seq, 0.0)
        return StreamingResponse(
            self._feed(request, cube_id, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _feed(self, request: Request, cube_id: str, batch: ChangeBatch) -> AsyncIterator[str]:
        yield f"retry: 1000\nevent: subscribed\ndata: {json.dumps({'cube_id': cube_id, 'seq': batch.seq})}\n\n"
        while True:
            for event in batch.events:
                yield f"id: {event.seq}\nevent: change\ndata: {event.model_dump_json()}\n\n"
            if await request.is_disconnected():
                return
            try:
                who: Caller = request.state.caller
                batch = await self._cube(who, cube_id, Role.read, "wait_changes", batch.seq, FEED_POLL_S)
                # the key and the role are checked again before anything that arrived is sent
                who = await self._call(self.identity, "authenticate", request.state.key)
                request.state.caller = who
                await self._call(self.directory, "authorize", cube_id, who, Role.read)
            except Exception as exc:
                cause = unwrap(exc)
                if not isinstance(cause, MemosError):
                    cause = MemosError(f"the feed stopped: {type(cause).__name__}")
                await _audit_failure(request, status_of(cause), cause.code, cause.message, cause.details)
                yield f"event: error\ndata: {json.dumps(error_body(cause.code, cause.message, cause.details))}\n\n"
                return
            if not batch.events:
                yield ": keepalive\n\n"
