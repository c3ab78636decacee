"""A cube's change feed: Server-Sent Events, one ``change`` event per new version (``id`` is the cube's
seq, so ``Last-Event-ID`` resumes). The key and the read role are checked again after every wait, so
revoking either ends the stream with an ``error`` event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from actors.calls import call
from actors.cube import CubeHost
from actors.cubes import CubeRef
from actors.directory import Directory
from actors.identity import Identity
from memos_ray.errors import InvalidInput
from memos_ray.types import AuditAction, Caller, ChangeBatch, Id, Role
from serve.auth import Auth, act, audit_failure
from serve.errors import as_memos_error, error_body
from serve.services import Services, Svc

router = APIRouter(tags=["changes"])
FEED_POLL_S = 2.0  # a subscriber's key and role are re-checked at least this often


@router.get("/v1/cubes/{cube_id}/changes", dependencies=[act(AuditAction.changes)])
async def changes(
    request: Request,
    cube_id: Id,
    after_seq: int | None = Query(None, ge=0, description="replay changes after this seq; default: from now"),
    last_event_id: str | None = Header(None, description="resume after this event id (SSE reconnect)"),
    who: Caller = Auth,
    svc: Services = Svc,
) -> StreamingResponse:
    """Server-Sent Events: ``change`` events (JSON :class:`ChangeEvent`) as agents write to the cube."""
    if after_seq is None and last_event_id is not None:
        if not last_event_id.isdigit():
            raise InvalidInput("Last-Event-ID must be a cube seq (an integer)")
        after_seq = int(last_event_id)
    cube = await svc.cubes.open(cube_id, who, Role.read)
    first = await cube.call(CubeHost.wait_changes, after_seq, 0.0)
    return StreamingResponse(
        _feed(request, svc, cube, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _feed(request: Request, svc: Services, cube: CubeRef, batch: ChangeBatch) -> AsyncIterator[str]:
    yield f"retry: 1000\nevent: subscribed\ndata: {json.dumps({'cube_id': cube.cube_id, 'seq': batch.seq})}\n\n"
    while True:
        for event in batch.events:
            yield f"id: {event.seq}\nevent: change\ndata: {event.model_dump_json()}\n\n"
        if await request.is_disconnected():
            return
        try:
            batch = await cube.call(CubeHost.wait_changes, batch.seq, FEED_POLL_S)
            # the key and the role are checked again before anything that arrived is sent
            who = await call(svc.identity, Identity.authenticate, request.state.key)
            request.state.caller = cube.who = who
            # the role again, through activation: it also keeps a watched cube warm in the Directory
            cube.activation = await call(svc.directory, Directory.activate, cube.cube_id, who, Role.read)
        except Exception as exc:
            cause = as_memos_error(exc)
            await audit_failure(request, cause.status_code, cause.code, cause.message, cause.details)
            yield f"event: error\ndata: {json.dumps(error_body(cause.code, cause.message, cause.details))}\n\n"
            return
        if not batch.events:
            yield ": keepalive\n\n"
