"""Authentication and auditing, as route dependencies.

- Every route except ``/v1/health`` depends on :func:`caller`: the API key (``Authorization:
  Bearer <key>`` or ``X-API-Key``) is checked by the Identity actor on every request, so the
  principal always comes from the key and a revoked key fails at once.
- Every route declares its audit action (``dependencies=[act(AuditAction.memory_add)]``). A
  mutation that succeeds records itself (:func:`record`); a mutation that fails, and every denied
  access (401, 403, and 404 for a cube), is recorded by the error handler (:func:`audit_failure`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi import Depends, Header, Request

from actors.audit import AuditLog
from actors.calls import call
from actors.identity import Identity
from memos_ray.errors import Unauthenticated, is_denial
from memos_ray.governance.identity import key_id_of
from memos_ray.types import AuditAction, AuditEvent, Caller, Result
from serve.services import services

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _event(request: Request, status: int, result: Result, **fields: Any) -> AuditEvent:
    who: Caller | None = getattr(request.state, "caller", None)
    return AuditEvent(
        principal=who.principal if who else None,
        key_id=who.key_id if who else key_id_of(getattr(request.state, "key", None)),
        action=getattr(request.state, "action", None) or AuditAction.request,
        result=result,
        status=status,
        cube_id=fields.pop("cube_id", None) or request.path_params.get("cube_id"),
        memory_id=fields.pop("memory_id", None) or request.path_params.get("memory_id"),
        method=request.method,
        path=request.url.path,
        request_id=getattr(request.state, "request_id", None),
        details=fields.pop("details", None) or {},
    )


async def audit_failure(
    request: Request, status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> None:
    """The error handlers' hook: denied accesses always, failed mutations, are audited. The cube is the
    path's, or the one the error names (a search or chat over several cubes)."""
    action = getattr(request.state, "action", None)
    denied = is_denial(code)
    if not denied and (action is None or AuditAction(action).reads):
        return
    cube_id = (details or {}).get("cube_id")
    event = _event(
        request,
        status,
        "denied" if denied else "error",
        cube_id=cube_id if isinstance(cube_id, str) else None,
        details={"code": code, "message": message},
    )
    try:
        await call(services(request).audit, AuditLog.append, [event])
    except Exception:  # the answer still goes out; the failure to record it is logged
        log.exception("could not audit %s %s", request.method, request.url.path)


async def record(
    request: Request,
    *,
    cube_id: str | None = None,
    memory_ids: Sequence[str] = (),
    details: Sequence[dict[str, Any]] | dict[str, Any] | None = None,
    action: AuditAction | None = None,
    status: int = 200,
) -> None:
    """Record a successful mutation: one record per memory it touched, or per entry of a ``details``
    list, or one."""
    if action is not None:
        request.state.action = action
    per = list(details) if isinstance(details, Sequence) else [details or {}] * max(1, len(memory_ids))
    ids: list[str | None] = list(memory_ids) or [None] * len(per)
    events = [
        _event(request, status, "ok", cube_id=cube_id, memory_id=m, details=d) for m, d in zip(ids, per, strict=True)
    ]
    await call(services(request).audit, AuditLog.append, events)


def shielded(route: F) -> F:
    """Run a mutating route to the end even if its client goes away: Serve cancels the request's task on a
    disconnect, and a write already sent to a cube must still get its audit record."""

    @functools.wraps(route)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.shield(asyncio.ensure_future(route(*args, **kwargs)))

    return run  # type: ignore[return-value]


def act(action: AuditAction) -> Any:
    """A route's audit action, as a route dependency: ``dependencies=[act(AuditAction.memory_add)]``."""

    async def mark(request: Request) -> None:
        request.state.action = action

    return Depends(mark)


async def authenticate(request: Request, authorization: str | None, x_api_key: str | None) -> Caller:
    key = x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
        key = token.strip()
    request.state.key = key
    who = await call(services(request).identity, Identity.authenticate, key)
    request.state.caller = who
    return who


async def caller(
    request: Request,
    authorization: str | None = Header(None, include_in_schema=False),
    x_api_key: str | None = Header(None, include_in_schema=False),
) -> Caller:
    """The authenticated principal of this request (401 otherwise)."""
    return await authenticate(request, authorization, x_api_key)


Auth = Depends(caller)
