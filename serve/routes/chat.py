"""Chat with memory (activation and parametric): the route only hands the request to
:class:`actors.chat.ChatService`, where the rules live. Chat reads memories: the read role on every
cube it names."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from memos_ray.types import AuditAction, Caller, ChatRequest, ChatResponse
from serve.auth import Auth, act, record
from serve.services import Services, Svc

router = APIRouter(tags=["chat"])


@router.post("/v1/chat", response_model=ChatResponse, dependencies=[act(AuditAction.chat)])
async def chat(request: Request, req: ChatRequest, who: Caller = Auth, svc: Services = Svc) -> Any:
    if not req.stream:
        response = await svc.chat.run(who, req)
        await audit_remembered(request, req, response)
        return response
    pieces = svc.chat.stream(who, req)
    first = await anext(pieces)  # errors before the first token (404, 403, 422) still answer as errors
    return StreamingResponse(_sse(request, req, first, pieces), media_type="text/event-stream")


async def audit_remembered(request: Request, req: ChatRequest, response: ChatResponse) -> None:
    """A remembered exchange is a write: audited like an add, one record per memory."""
    if response.remembered:
        ids = [r.memory_id for r in response.remembered]
        details = {"source": "chat", "chat_id": response.chat_id}
        cube_id = req.cube_ids[0]
        details_each = [details] * len(ids)
        await record(
            request, cube_id=cube_id, memory_ids=ids, details=details_each, action=AuditAction.memory_add, status=201
        )


async def _sse(
    request: Request, req: ChatRequest, first: str | ChatResponse, rest: AsyncIterator[str | ChatResponse]
) -> AsyncIterator[str]:
    async def every() -> AsyncIterator[str | ChatResponse]:
        yield first
        async for piece in rest:
            yield piece

    async for piece in every():
        if isinstance(piece, ChatResponse):
            await audit_remembered(request, req, piece)
            yield f"event: done\ndata: {piece.model_dump_json()}\n\n"
        else:
            yield f"event: token\ndata: {json.dumps({'text': piece})}\n\n"
