"""Chat with memory (activation and parametric): the route only hands the request to
:class:`actors.chat.ChatService`, where the rules live. Chat reads memories: the read role on every
cube it names."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from memos_ray.types import AuditAction, Caller, ChatRequest, ChatResponse
from serve.auth import Auth, act
from serve.services import Services, Svc

router = APIRouter(tags=["chat"])


@router.post("/v1/chat", response_model=ChatResponse, dependencies=[act(AuditAction.chat)])
async def chat(req: ChatRequest, who: Caller = Auth, svc: Services = Svc) -> Any:
    if not req.stream:
        return await svc.chat.run(who, req)
    pieces = svc.chat.stream(who, req)
    first = await anext(pieces)  # errors before the first token (404, 403, 422) still answer as errors
    return StreamingResponse(_sse(first, pieces), media_type="text/event-stream")


async def _sse(first: str | ChatResponse, rest: AsyncIterator[str | ChatResponse]) -> AsyncIterator[str]:
    async def every() -> AsyncIterator[str | ChatResponse]:
        yield first
        async for piece in rest:
            yield piece

    async for piece in every():
        if isinstance(piece, ChatResponse):
            yield f"event: done\ndata: {piece.model_dump_json()}\n\n"
        else:
            yield f"event: token\ndata: {json.dumps({'text': piece})}\n\n"
