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
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from actors.adapters import Adapters
from actors.calls import call, streaming, tell
from actors.cube import CubeHost
from actors.cubes import Cubes
from actors.handoff import AdapterWeights, Placement
from actors.memories import MemoryService
from actors.runtime import ensure_scheduler
from actors.scheduler import SCHEDULER_NAME, Scheduler, worker_placeable
from actors.usage import UsageRecorder
from actors.worker import ModelWorker
from memos_ray.activation.prompt import PINNED_TAG, PlannedChat, cubes_kv_mode, plan_chat, question_of
from memos_ray.config import MemosConfig
from memos_ray.errors import InvalidInput, Unavailable
from memos_ray.llm import model_name
from memos_ray.plaintext.reader import context_of
from memos_ray.types import (
    MAX_TEXT_CHARS,
    Caller,
    ChatOutcome,
    ChatPlan,
    ChatRequest,
    ChatResponse,
    MemoryCreate,
    MemoryItem,
    MemoryKind,
    MemoryRef,
    MetaValue,
    Recall,
    Role,
    SearchQuery,
    SourceIn,
    SourceType,
    utcnow,
)

log = logging.getLogger(__name__)


NODE_CHECK_S = 2.0  # how often a running chat asks whether its worker's node is still up


class _NodeLost(Exception):
    """The node of the worker a chat waits on is gone (see ChatService._unless_node_lost)."""


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


def response_of(
    outcome: ChatOutcome,
    used: list[MemoryItem],
    agent: str,
    chat_id: str = "",
    remembered: list[MemoryRef] | None = None,
) -> ChatResponse:
    return ChatResponse(
        agent=agent,
        chat_id=chat_id,
        remembered=remembered or [],
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
        memories: MemoryService | None = None,
    ) -> None:
        self.config = config
        self.cubes = cubes
        self.adapters = adapters
        self.embed = embed
        self.usage = usage
        self.memories = memories
        self._scheduler: ActorHandle | None = None

    def scheduler(self) -> ActorHandle:
        """The Scheduler; started (with its model workers) by the first chat."""
        if self._scheduler is None:
            try:
                self._scheduler = ray.get_actor(SCHEDULER_NAME, namespace=self.config.namespace)
            except ValueError:
                self._scheduler = ensure_scheduler(self.config, wait=False)
        return self._scheduler

    async def _adapter(self, req: ChatRequest, cube_id: str) -> AdapterWeights | None:
        if not req.use_parametric_memory:
            return None
        try:  # the cube's active adapter (the cubes are authorized before)
            return await call(self.adapters, Adapters.active, cube_id)
        except Exception:  # the adapter store is unreachable or broken: answer with the base model
            log.exception("no adapter for cube %s; chatting with the base model", cube_id)
            return None

    async def _embed_question(self, q: SearchQuery | None) -> np.ndarray | None:
        return (await self.embed([q.query]))[0] if q is not None else None

    async def prepare(self, who: Caller, req: ChatRequest) -> PreparedChat:
        q = SearchQuery(query=question_of(req.messages)[:4096], top_k=req.top_k) if req.top_k else None
        cubes = await self.cubes.open_many(list(req.cube_ids), who, Role.read)  # 404/403 before any work
        if req.remember:  # where the exchange goes: writable, checked before any work too
            if self.memories is None:
                raise InvalidInput("this entry point cannot remember chats")
            await self.cubes.open(req.cube_ids[0], who, Role.write)
        if len(cubes) == 1:  # its adapter is looked up while the question is embedded
            qvec, adapter = await asyncio.gather(self._embed_question(q), self._adapter(req, req.cube_ids[0]))
            recalls = [await cubes[0].call(CubeHost.recall, PINNED_TAG, q, qvec)]
        else:  # several cubes: the adapter of the one the question is about (one adapter runs at a time)
            qvec = await self._embed_question(q)
            recalls = list(await asyncio.gather(*(c.call(CubeHost.recall, PINNED_TAG, q, qvec) for c in cubes)))
            adapter = await self._adapter(req, most_relevant(req.cube_ids, recalls))
        planned = plan_chat(
            req,
            [m for r in recalls for m in r.pinned],
            [m for r in recalls for m in r.working],
            [h for r in recalls for h in r.hits],
            adapter.adapter if adapter else None,
            req.layout or self.config.llm.layout,
            self.config.llm.quote_top if req.quote_top is None else req.quote_top,
            cubes_kv_mode(recalls) or self.config.llm.kv_mode,
            self.config.llm.compose_recompute,
        )
        scheduler = self.scheduler()
        placement = await call(scheduler, Scheduler.place, planned.plan, req.worker, adapter)
        return PreparedChat(who.principal, planned, adapter, placement, scheduler)

    async def run(self, who: Caller, req: ChatRequest) -> ChatResponse:
        """A chat whose worker dies under it (its node was lost?) runs once more on a worker that is up,
        unless it was pinned to that one: the caller had no answer yet, and the Scheduler is told."""
        retried = False
        while True:
            chat = await self.prepare(who, req)
            outcome: ChatOutcome | None = None
            try:
                outcome = await self._unless_node_lost(
                    call(chat.placement.handle, ModelWorker.chat, chat.plan, chat.placement, chat.adapter),
                    chat.placement.worker,
                )
            except (RayActorError, _NodeLost) as exc:
                tell(chat.scheduler, Scheduler.worker_lost, chat.placement.worker)
                if retried or req.worker is not None:
                    raise Unavailable(
                        f"model worker {chat.placement.worker} was lost during the chat: retry",
                        {"worker": chat.placement.worker, "retry": True},
                    ) from exc
                retried = True
                continue
            finally:
                self._release(chat, outcome)
            return await self._respond(who, req, chat, outcome)

    async def _unless_node_lost(self, running: Awaitable[ChatOutcome], w: int) -> ChatOutcome:
        """The worker's answer, or :class:`_NodeLost` once no live node offers what the worker is pinned to: a
        call that reached the worker after its node died but before Ray said so waits for a restart that
        may never come (Ray queues it), where one already running fails with RayActorError."""
        task = asyncio.ensure_future(running)
        while True:
            done, _ = await asyncio.wait({task}, timeout=NODE_CHECK_S)
            if done:
                return task.result()
            if not await asyncio.to_thread(worker_placeable, self.config, w):
                task.cancel()
                raise _NodeLost(w)

    async def _respond(self, who: Caller, req: ChatRequest, chat: PreparedChat, outcome: ChatOutcome) -> ChatResponse:
        """The memory loop: with ``remember``, the user's turn and the answer become dialogue memories of the
        cube (redacted like any write), the answer made from the memories the chat used."""
        chat_id = f"chat-{secrets.token_hex(8)}"
        remembered: list[MemoryRef] = []
        if req.remember and self.memories is not None:
            cube_id = req.cube_ids[0]
            turns = exchange(req, outcome, chat.planned.used, chat_id, model_name(self.config.llm), who.principal)
            written = await self.memories.add(who, cube_id, turns)
            remembered = [m.ref for m in written.items]
        return response_of(outcome, chat.planned.used, who.principal, chat_id, remembered)

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
            yield await self._respond(who, req, chat, outcome)

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


def most_relevant(cube_ids: list[str], recalls: list[Recall]) -> str:
    """The cube whose best hit is closest to the question (cosine, comparable across cubes); the first cube
    when nothing was retrieved. A chat runs under at most one adapter: this cube's."""
    best = [max((h.dense_score for h in r.hits if h.dense_score is not None), default=-2.0) for r in recalls]
    return cube_ids[max(range(len(cube_ids)), key=lambda i: (best[i], -i))]


def exchange(
    req: ChatRequest, outcome: ChatOutcome, used: list[MemoryItem], chat_id: str, model: str, agent: str
) -> list[MemoryCreate]:
    """A chat's last user turn and its answer, as the two dialogue memories the memory loop writes."""
    users = [m for m in req.messages if m.role == "user"]
    question = users[-1] if users else req.messages[-1]
    now = utcnow()
    metadata: dict[str, MetaValue] = {"chat_id": chat_id, "model": model, "adapter": outcome.adapter}
    asked = MemoryCreate(
        text=question.content[:MAX_TEXT_CHARS],
        kind=MemoryKind.dialogue,
        metadata=metadata,
        said_at=question.timestamp or now,
        source=SourceIn(
            source_type=SourceType.message,
            source_id=question.id,
            conversation_id=chat_id,
            speaker=question.speaker or agent,
            role="user",
        ),
    )
    answered = MemoryCreate(
        text=(outcome.text.strip() or "(no answer)")[:MAX_TEXT_CHARS],
        context=context_of(question),
        kind=MemoryKind.dialogue,
        metadata=metadata,
        said_at=now,
        source=SourceIn(
            source_type=SourceType.message,
            conversation_id=chat_id,
            speaker="assistant",
            role="assistant",
            derived_from=[m.ref for m in used][:64],
        ),
    )
    return [asked, answered]


__all__ = ["ChatService", "PreparedChat", "exchange", "most_relevant", "response_of"]
