"""A chat with memory, for every entry point: retrieval and pinned memories from the cubes, the prefix
rule (:mod:`memos_ray.activation.prompt`), the cube's adapter, a Scheduler placement, and the model
worker. The HTTP route (and later the OpenAI-compatible route and MCP) only call :meth:`ChatService.run`
or :meth:`ChatService.stream`.

Round trips of a chat over one cube: the Directory (activation with the role: 404/403 before any work),
the Embedder and the Adapters actor (concurrently), the cube (pinned memories and search hits in one
call), the Scheduler (placement, which carries the worker), the worker; the Scheduler hears of the end
fire-and-forget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import ray
from ray.actor import ActorHandle

from actors.adapters import Adapters
from actors.calls import call, streaming, tell
from actors.cube import CubeHost
from actors.cubes import Cubes
from actors.handoff import AdapterWeights, Placement
from actors.runtime import ensure_scheduler
from actors.scheduler import SCHEDULER_NAME, Scheduler
from actors.usage import UsageRecorder
from actors.worker import ModelWorker
from memos_ray.activation.prompt import PINNED_TAG, PlannedChat, plan_chat, question_of
from memos_ray.config import MemosConfig
from memos_ray.types import Caller, ChatOutcome, ChatPlan, ChatRequest, ChatResponse, MemoryItem, Role, SearchQuery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedChat:
    """A chat ready to run: the plan, the memories it uses, the adapter's weights, and where it runs."""

    agent: str
    planned: PlannedChat
    adapter: AdapterWeights | None
    placement: Placement
    scheduler: ActorHandle

    @property
    def plan(self) -> ChatPlan:
        return self.planned.plan


def response_of(outcome: ChatOutcome, used: list[MemoryItem], agent: str) -> ChatResponse:
    return ChatResponse(
        agent=agent,
        text=outcome.text,
        memories_used=[m.ref for m in used],
        kv=outcome.kv,
        ttft_ms=outcome.ttft_ms,
        total_ms=outcome.total_ms,
        tokens_generated=len(outcome.token_ids),
        prefill_tokens=outcome.prefill_tokens,
        prompt_tokens=outcome.prompt_tokens,
        adapter=outcome.adapter,
        adapter_status=outcome.adapter_status,
        adapter_ms=outcome.adapter_ms,
    )


class ChatService:
    def __init__(
        self,
        config: MemosConfig,
        cubes: Cubes,
        adapters: ActorHandle,
        embed: Callable[[list[str]], Awaitable[np.ndarray]],
        usage: UsageRecorder | None = None,
    ) -> None:
        self.config = config
        self.cubes = cubes
        self.adapters = adapters
        self.embed = embed
        self.usage = usage
        self._scheduler: ActorHandle | None = None

    def scheduler(self) -> ActorHandle:
        """The Scheduler; started (with its model workers) by the first chat."""
        if self._scheduler is None:
            try:
                self._scheduler = ray.get_actor(SCHEDULER_NAME, namespace=self.config.namespace)
            except ValueError:
                self._scheduler = ensure_scheduler(self.config, wait=False)
        return self._scheduler

    async def _adapter(self, req: ChatRequest) -> AdapterWeights | None:
        if not req.use_parametric_memory:
            return None
        try:  # the first cube's active adapter (the cubes are authorized alongside)
            return await call(self.adapters, Adapters.active, req.cube_ids[0])
        except Exception:  # the adapter store is unreachable or broken: answer with the base model
            log.exception("no adapter for cube %s; chatting with the base model", req.cube_ids[0])
            return None

    async def _embed_question(self, q: SearchQuery | None) -> np.ndarray | None:
        return (await self.embed([q.query]))[0] if q is not None else None

    async def prepare(self, who: Caller, req: ChatRequest) -> PreparedChat:
        q = SearchQuery(query=question_of(req.messages)[:4096], top_k=req.top_k) if req.top_k else None
        cubes = await self.cubes.open_many(list(req.cube_ids), who, Role.read)  # 404/403 before any work
        qvec, adapter = await asyncio.gather(self._embed_question(q), self._adapter(req))
        recalls = await asyncio.gather(*(c.call(CubeHost.recall, PINNED_TAG, q, qvec) for c in cubes))
        planned = plan_chat(
            req,
            [m for r in recalls for m in r.pinned],
            [m for r in recalls for m in r.working],
            [h for r in recalls for h in r.hits],
            adapter.adapter if adapter else None,
            req.layout or self.config.llm.layout,
            self.config.llm.quote_top if req.quote_top is None else req.quote_top,
        )
        scheduler = self.scheduler()
        placement = await call(scheduler, Scheduler.place, planned.plan, req.worker, adapter)
        return PreparedChat(who.principal, planned, adapter, placement, scheduler)

    async def run(self, who: Caller, req: ChatRequest) -> ChatResponse:
        chat = await self.prepare(who, req)
        outcome: ChatOutcome | None = None
        try:
            outcome = await call(chat.placement.handle, ModelWorker.chat, chat.plan, chat.placement, chat.adapter)
        finally:
            self._release(chat, outcome)
        return response_of(outcome, chat.planned.used, who.principal)

    async def stream(self, who: Caller, req: ChatRequest) -> AsyncIterator[str | ChatResponse]:
        """Text pieces as the worker decodes them, then the response."""
        chat = await self.prepare(who, req)
        outcome: ChatOutcome | None = None
        try:
            pieces = streaming(chat.placement.handle, ModelWorker.chat_stream, chat.plan, chat.placement, chat.adapter)
            async for ref in pieces:
                piece = await ref
                if isinstance(piece, ChatOutcome):
                    outcome = piece
                else:
                    yield piece
        finally:
            self._release(chat, outcome)
        if outcome is not None:
            yield response_of(outcome, chat.planned.used, who.principal)

    def _release(self, chat: PreparedChat, outcome: ChatOutcome | None) -> None:
        if outcome is not None and self.usage is not None:
            p = chat.planned
            cached = p.in_prefix if outcome.kv.status != "off" else []
            prompt = p.in_prompt if cached else [*p.in_prefix, *p.in_prompt]
            self.usage.chatted(chat.agent, chat.plan.cube_ids, p.retrieved, prompt, cached)
        with contextlib.suppress(Exception):  # bookkeeping: never the request's failure
            tell(
                chat.scheduler,
                Scheduler.release,
                chat.placement.worker,
                chat.placement.key,
                outcome.kv if outcome else None,
                outcome.adapter if outcome else None,
            )


__all__ = ["ChatService", "PreparedChat", "response_of"]
