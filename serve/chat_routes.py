"""The chat routes (activation memory): retrieval, a KV-cached prefix, and a model worker.

The Scheduler picks a worker that holds (or receives through the object store) the KV cache
of the prefix; the worker prefills only the new tokens. Chat reads memories, so it needs the
read role on every cube it names.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi.responses import StreamingResponse

from actors.runtime import ensure_scheduler
from actors.scheduler import SCHEDULER_NAME, Placement
from actors.worker import worker_name
from memos_ray.activation import kvcache
from memos_ray.config import MemosConfig
from memos_ray.types import (
    Caller,
    ChatMessage,
    ChatOutcome,
    ChatPlan,
    ChatRequest,
    ChatResponse,
    LifecycleState,
    MemoryItem,
    Role,
    SearchQuery,
)
from serve.base import Auth, IngressBase, act, app

log = logging.getLogger(__name__)
PINNED_TAG = "pinned"


def _response(outcome: ChatOutcome, info: Any, used: list[MemoryItem], agent: str) -> ChatResponse:
    return ChatResponse(
        agent=agent,
        text=outcome.text,
        memories_used=[m.ref for m in used],
        kv=info,
        ttft_ms=outcome.ttft_ms,
        total_ms=outcome.total_ms,
        tokens_generated=len(outcome.token_ids),
        prefill_tokens=outcome.prefill_tokens,
        prompt_tokens=outcome.prompt_tokens,
        adapter=outcome.adapter,
        adapter_status=outcome.adapter_status,
        adapter_ms=outcome.adapter_ms,
    )


class ChatRoutes(IngressBase):
    def __init__(self, config: MemosConfig) -> None:
        super().__init__(config)
        self._scheduler_handle: Any = None
        self._workers: dict[int, Any] = {}

    async def _scheduler(self, start: bool) -> Any:
        """The Scheduler; started (with its model workers) by the first chat, never by a memory edit."""
        if self._scheduler_handle is None:
            try:
                self._scheduler_handle = ray.get_actor(SCHEDULER_NAME, namespace=self.config.namespace)
            except ValueError:
                if not start:
                    return None
                self._scheduler_handle = ensure_scheduler(self.config, wait=False)
        return self._scheduler_handle

    def _worker(self, index: int) -> Any:
        if index not in self._workers:
            self._workers[index] = ray.get_actor(worker_name(index), namespace=self.config.namespace)
        return self._workers[index]

    async def _invalidate(self, cube_id: str, memory_id: str, what: str) -> None:
        """Drop KV caches built from a memory, and mark adapters that learned from it stale. The edit is
        already durable: a failure here must not undo its 2xx (and cannot leave a stale cache in use:
        cache keys hash the rendered text)."""
        try:
            await self.adapters.memory_changed.remote(cube_id, [memory_id], what)
        except Exception:
            log.exception("marking adapters of %s stale failed", cube_id)
        scheduler = await self._scheduler(start=False)
        if scheduler is not None:
            try:
                await scheduler.invalidate.remote([memory_id])
            except Exception:
                log.exception("invalidating caches built from %s failed", memory_id)

    async def _forget_adapters(self, cube_id: str) -> None:
        """A deleted cube's adapters go from disk and from every worker."""
        try:
            await self._unload_adapters(await self.adapters.drop_cube.remote(cube_id))
        except Exception:
            log.exception("removing the adapters of deleted cube %s failed", cube_id)

    async def _unload_adapters(self, adapter_ids: list[str]) -> None:
        """Off every model worker, with the KV caches computed under them (no workers yet: nothing to do)."""
        scheduler = await self._scheduler(start=False)
        if adapter_ids and scheduler is not None:
            await scheduler.drop_adapters.remote(adapter_ids)

    async def _plan(
        self, who: Caller, req: ChatRequest
    ) -> tuple[ChatPlan, list[MemoryItem], list[ray.ObjectRef] | None]:
        """The cached prefix is the cubes' pinned memories (tag "pinned"), the retrieved memories
        riding in the prompt; or, with ``prefix="retrieved"``, the retrieval result itself."""
        active = [LifecycleState.active]
        lists = await asyncio.gather(
            *(self._cube(who, c, Role.read, "list", 0, 1000, active, [], PINNED_TAG) for c in req.cube_ids)
        )
        pinned = [m for page in lists for m in page.items]
        pinned_ids = {m.id for m in pinned}
        messages = list(req.messages)
        retrieved: list[MemoryItem] = []
        question = next((m.content for m in reversed(messages) if m.role == "user"), messages[-1].content)
        if req.top_k:
            query = SearchQuery(query=question[:4096], top_k=req.top_k)
            found = await self._search(who, list(req.cube_ids), query)
            retrieved = [h.memory for h in found.hits if h.memory.id not in pinned_ids]
        if req.prefix == "retrieved":
            # one prefix per distinct retrieval result, in a stable order so equal sets share a cache
            prefix = sorted(pinned + retrieved, key=lambda m: (m.created_at, m.id))
        else:
            prefix = pinned
            if retrieved:
                context = "Relevant memories:\n" + "\n".join(f"- {m.text}" for m in retrieved)
                messages.insert(0, ChatMessage(role="system", content=context))
        adapter, adapter_refs = None, None
        if req.use_parametric_memory:  # the first cube's active adapter (the cubes were authorized above)
            try:
                active = await self.adapters.active.remote(req.cube_ids[0])
            except Exception:  # the adapter store is unreachable or broken: answer with the base model
                log.exception("no adapter for cube %s; chatting with the base model", req.cube_ids[0])
                active = None
            if active is not None:
                adapter, adapter_refs = active
        plan = ChatPlan(
            adapter=adapter,
            prefix_text=kvcache.render_memories(prefix),
            sources=[m.ref for m in prefix],
            messages=messages,
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            seed=req.seed,
            use_kv=req.use_activation_memory,
        )
        return plan, pinned + retrieved, adapter_refs

    @app.post("/v1/chat", tags=["chat"], response_model=ChatResponse, dependencies=[act("chat")])
    async def chat(self, req: ChatRequest, who: Caller = Auth) -> Any:
        plan, used, adapter_refs = await self._plan(who, req)
        scheduler = await self._scheduler(start=True)
        placement: Placement = await scheduler.place.remote(plan, req.worker, adapter_refs)
        try:
            worker = self._worker(placement.worker)
        except Exception:
            await scheduler.record.remote(placement, None)
            raise
        if req.stream:
            return StreamingResponse(
                self._sse(scheduler, worker, placement, plan, used, who.principal, adapter_refs),
                media_type="text/event-stream",
            )
        outcome: ChatOutcome | None = None
        try:
            outcome = await worker.chat.remote(plan, placement.adopt, placement.adopt_entry, adapter_refs)
        finally:
            info = await scheduler.record.remote(placement, outcome)
        assert outcome is not None
        return _response(outcome, info, used, who.principal)

    async def _sse(
        self,
        scheduler: Any,
        worker: Any,
        placement: Placement,
        plan: ChatPlan,
        used: list[MemoryItem],
        agent: str,
        adapter_refs: list[ray.ObjectRef] | None,
    ) -> AsyncIterator[str]:
        outcome: ChatOutcome | None = None
        try:
            async for ref in worker.chat_stream.remote(plan, placement.adopt, placement.adopt_entry, adapter_refs):
                piece = await ref
                if isinstance(piece, ChatOutcome):
                    outcome = piece
                else:
                    yield f"event: token\ndata: {json.dumps({'text': piece})}\n\n"
        finally:
            info = await scheduler.record.remote(placement, outcome)
        if outcome is not None:
            yield f"event: done\ndata: {_response(outcome, info, used, agent).model_dump_json()}\n\n"
