"""The OpenAI-compatible chat: ``POST /v1/chat/completions`` and ``GET /v1/models``.

The request becomes the native :class:`ChatRequest` (:meth:`OpenAIChatRequest.to_chat`: the model names the
cubes, ``metadata`` the options) and runs through the same :class:`actors.chat.ChatService` as ``/v1/chat``,
audited the same way; the answer is OpenAI's, with the native response in its ``memos`` field. Streaming follows
OpenAI's wire format: ``data: <chunk>`` lines, the last chunk carrying ``finish_reason`` and ``memos``, then
``data: [DONE]``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from actors.calls import call
from actors.directory import Directory
from memos_ray.errors import InvalidInput
from memos_ray.types import AuditAction, Caller, ChatRequest, ChatResponse
from memos_ray.types.openai import (
    MODEL_PREFIX,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    OpenAIChatRequest,
    Usage,
    model_name,
)
from serve.auth import Auth, act
from serve.routes.chat import audit_remembered
from serve.services import Services, Svc

router = APIRouter(tags=["openai"])


def _native(req: OpenAIChatRequest) -> ChatRequest:
    try:
        return req.to_chat()
    except ValueError as exc:
        raise InvalidInput(str(exc), {"model": req.model}) from None


def _finish(response: ChatResponse, chat: ChatRequest, stopped: bool) -> str:
    return "length" if not stopped and response.tokens_generated >= chat.max_tokens else "stop"


def _usage(response: ChatResponse) -> Usage:
    return Usage(
        prompt_tokens=response.prompt_tokens,
        completion_tokens=response.tokens_generated,
        total_tokens=response.prompt_tokens + response.tokens_generated,
    )


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first stop sequence, and whether one was found."""
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


@router.post("/v1/chat/completions", response_model=None, dependencies=[act(AuditAction.chat)])
async def chat_completions(
    request: Request, req: OpenAIChatRequest, who: Caller = Auth, svc: Services = Svc
) -> ChatCompletion | StreamingResponse:
    """A memory-augmented chat for OpenAI clients: ``model`` is ``memos-ray/<cube_id>`` (``+`` joins several
    cubes), ``metadata`` takes ``remember``, ``top_k``, ``use_activation_memory``, ``use_parametric_memory``,
    ``prefix`` and ``layout`` (as strings), ``user`` names the speaker. The ``memos`` field is what
    ``/v1/chat`` answers."""
    chat = _native(req)
    completion_id = f"chatcmpl-{secrets.token_hex(12)}"
    created = int(time.time())
    if not req.stream:
        response = await svc.chat.run(who, chat)
        await audit_remembered(request, chat, response)
        text, stopped = cut_at_stop(response.text, req.stops)
        return ChatCompletion(
            id=completion_id,
            created=created,
            model=req.model,
            choices=[Choice(message=AssistantMessage(content=text), finish_reason=_finish(response, chat, stopped))],
            usage=_usage(response),
            memos=response,
        )
    pieces = svc.chat.stream(who, chat)
    first = await anext(pieces)  # errors before the first token (404, 403, 422) still answer as errors

    async def every() -> AsyncIterator[str | ChatResponse]:
        yield first
        async for piece in pieces:
            yield piece

    def chunk(delta: Delta, **fields: object) -> str:
        body = ChatCompletionChunk(
            id=completion_id, created=created, model=req.model, choices=[ChunkChoice(delta=delta)], **fields
        )
        return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

    async def sse() -> AsyncIterator[str]:
        yield chunk(Delta(role="assistant", content=""))
        text, sent, stopped = "", 0, False
        hold = max((len(s) - 1 for s in req.stops), default=0)  # a stop sequence may span pieces
        async for piece in every():
            if isinstance(piece, ChatResponse):
                if not stopped and len(text) > sent:
                    yield chunk(Delta(content=text[sent:]))
                await audit_remembered(request, chat, piece)
                done = ChunkChoice(delta=Delta(), finish_reason=_finish(piece, chat, stopped))  # type: ignore[arg-type]
                last = ChatCompletionChunk(
                    id=completion_id, created=created, model=req.model, choices=[done], memos=piece
                )
                yield f"data: {last.model_dump_json(exclude_none=True)}\n\n"
                if req.stream_options and req.stream_options.include_usage:
                    usage = ChatCompletionChunk(
                        id=completion_id, created=created, model=req.model, choices=[], usage=_usage(piece)
                    )
                    yield f"data: {usage.model_dump_json(exclude_none=True)}\n\n"
            elif not stopped:
                text += piece
                cut, stopped = cut_at_stop(text, req.stops)
                ready = len(cut) if stopped else len(text) - hold
                if ready > sent:
                    yield chunk(Delta(content=text[sent:ready]))
                    sent = ready
        yield "data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream")


@router.get("/v1/models", dependencies=[act(AuditAction.cube_read)])
async def list_models(who: Caller = Auth, svc: Services = Svc) -> ModelList:
    """One model per cube the key may read (``memos-ray/<cube_id>``), for OpenAI clients and agent frameworks."""
    cubes = await call(svc.directory, Directory.list_cubes, who, 0, 1000)
    return ModelList(
        data=[
            ModelCard(id=model_name([c.id]), created=int(c.created_at.timestamp()), owned_by=c.owner)
            for c in cubes.cubes
        ]
    )


__all__ = ["MODEL_PREFIX", "cut_at_stop", "router"]
