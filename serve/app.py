"""The HTTP interface: a Ray Serve deployment with a FastAPI ingress (``/v1``, OpenAPI at ``/docs``).

The ingress validates input, runs the MemReader, asks the Embedder for vectors and the
Directory for the cube's actor, and calls the cube. It holds no memory state itself, so
replicas scale freely.

    serve run serve.app:build_app          # or a Serve config, see clusters/serve_config.yaml
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import ray
from fastapi import FastAPI, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application

from actors.runtime import ensure_runtime, ensure_scheduler
from actors.scheduler import SCHEDULER_NAME, Placement
from actors.worker import worker_name
from memos_ray import __version__, kvcache
from memos_ray.chat import ChatOutcome, ChatPlan, ChatRequest, ChatResponse
from memos_ray.config import MemosConfig
from memos_ray.errors import Unavailable
from memos_ray.models import (
    AddResult,
    ChatMessage,
    CubeCreate,
    CubeList,
    CubeMeta,
    Health,
    Id,
    LifecycleState,
    MemoryBatchCreate,
    MemoryCreate,
    MemoryItem,
    MemoryKind,
    MemoryList,
    MemoryUpdate,
    MessagesCreate,
    SearchHit,
    SearchQuery,
    SearchRequest,
    SearchResponse,
    Status,
)
from memos_ray.reader import read_messages
from memos_ray.text import index_text
from serve.errors import error_body, install, unwrap

app = FastAPI(
    title="memos-ray",
    version=__version__,
    description="A memory operating system for LLM agents: MemCube actors on Ray, served by Ray Serve.",
)
install(app)

log = logging.getLogger(__name__)
AUTHOR = "local"  # the principal, until API keys arrive (governance)


@app.middleware("http")
async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """413 before reading a body over the limit (declared or streamed)."""
    limit: int = getattr(app.state, "max_body_bytes", 4 * 1024 * 1024)
    declared = request.headers.get("content-length")
    too_large = JSONResponse(
        status_code=413,
        content=error_body("payload_too_large", f"request body exceeds {limit} bytes", {"limit": limit}),
    )
    if declared is not None:
        if not declared.isdigit():
            return JSONResponse(status_code=400, content=error_body("bad_request", "invalid Content-Length"))
        if int(declared) > limit:
            return too_large
    elif request.method in ("POST", "PUT", "PATCH"):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return too_large
        request._body = body  # starlette reuses a body that was already read
    return await call_next(request)


MAX_FAN_OUT = 8  # cubes one search activates at once: a wide search must not flush every warm cube
READ_METHODS = frozenset({"get", "list", "history", "search", "meta"})


PINNED_TAG = "pinned"


def _response(outcome: ChatOutcome, info: Any, used: list[MemoryItem], agent: str | None) -> ChatResponse:
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
    )


@serve.deployment(name="memos_ingress")
@serve.ingress(app)
class MemosIngress:
    def __init__(self, config: MemosConfig) -> None:
        self.config = config
        app.state.max_body_bytes = config.serve.max_body_bytes
        runtime = ensure_runtime(config, wait=False)
        self.directory = runtime.directory
        self.embedder = runtime.embedder
        self._scheduler_handle: Any = None
        self._workers: dict[int, Any] = {}

    # ------------------------------------------------------------ plumbing

    async def _embed(self, texts: list[str]) -> np.ndarray:
        return await self.embedder.embed.remote(texts)

    async def _cube(self, cube_id: str, method: str, *args: Any) -> Any:
        """Call a cube's actor, reactivating it if it was passivated under us."""
        for attempt in range(3):
            handle = await self.directory.activate.remote(cube_id)
            try:
                return await getattr(handle, method).remote(*args)
            except Exception as exc:
                cause = unwrap(exc)
                died = isinstance(cause, ray.exceptions.RayActorError)
                retired = died and await self.directory.drop_dead.remote(cube_id, handle)
                # A passivated actor refused the call, or died after passivating without running it:
                # always safe to retry. One that crashed may have applied a write: only reads retry.
                passivated = isinstance(cause, Unavailable) and bool(cause.details.get("retry"))
                if attempt == 2 or not (passivated or retired or (died and method in READ_METHODS)):
                    raise cause from None
        raise Unavailable(f"cube {cube_id} unavailable")

    # ------------------------------------------------------------ health

    @app.get("/v1/health", tags=["system"])
    async def health(self) -> Health:
        return Health(status="ok", version=__version__)

    @app.get("/v1/status", tags=["system"])
    async def get_status(self) -> Status:
        directory, embedder = await asyncio.gather(self.directory.stats.remote(), self.embedder.stats.remote())
        return Status(version=__version__, directory=directory.model_dump(), embedder=embedder.model_dump())

    # ------------------------------------------------------------ cubes

    @app.post("/v1/cubes", status_code=status.HTTP_201_CREATED, tags=["cubes"])
    async def create_cube(self, req: CubeCreate) -> CubeMeta:
        return await self.directory.create_cube.remote(req)

    @app.get("/v1/cubes", tags=["cubes"])
    async def list_cubes(self, offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000)) -> CubeList:
        return await self.directory.list_cubes.remote(offset, limit)

    @app.get("/v1/cubes/{cube_id}", tags=["cubes"])
    async def get_cube(self, cube_id: Id) -> CubeMeta:
        return await self.directory.get_cube.remote(cube_id)

    @app.delete("/v1/cubes/{cube_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["cubes"])
    async def delete_cube(self, cube_id: Id) -> Response:
        await self.directory.delete_cube.remote(cube_id)
        return Response(status_code=204)

    # ------------------------------------------------------------ memories

    async def _add(self, cube_id: str, items: list[MemoryCreate]) -> list[MemoryItem]:
        # 404 before spending an embedding. activate, not get_cube: get_cube asks a live cube for fresh
        # counters (a pass over all its memories), and the add needs the cube live anyway.
        await self.directory.activate.remote(cube_id)
        vecs = await self._embed([index_text(m.text, m.source.speaker) for m in items])
        return await self._cube(cube_id, "add", items, vecs, AUTHOR)

    @app.post("/v1/cubes/{cube_id}/memories", status_code=status.HTTP_201_CREATED, tags=["memories"])
    async def add_memory(self, cube_id: Id, req: MemoryCreate) -> MemoryItem:
        return (await self._add(cube_id, [req]))[0]

    @app.post("/v1/cubes/{cube_id}/memories/batch", status_code=status.HTTP_201_CREATED, tags=["memories"])
    async def add_memories(self, cube_id: Id, req: MemoryBatchCreate) -> AddResult:
        items = await self._add(cube_id, req.items)
        return AddResult(items=[i.ref for i in items])

    @app.post("/v1/cubes/{cube_id}/messages", status_code=status.HTTP_201_CREATED, tags=["memories"])
    async def add_messages(self, cube_id: Id, req: MessagesCreate) -> AddResult:
        items = await self._add(cube_id, read_messages(req))
        return AddResult(items=[i.ref for i in items])

    @app.get("/v1/cubes/{cube_id}/memories", tags=["memories"])
    async def list_memories(
        self,
        cube_id: Id,
        offset: int = Query(0, ge=0),
        limit: int = Query(50, ge=1, le=1000),
        state: list[LifecycleState] = Query([LifecycleState.active]),
        kind: list[MemoryKind] = Query([]),
        tag: str | None = Query(None, max_length=64),
    ) -> MemoryList:
        return await self._cube(cube_id, "list", offset, limit, state, kind, tag)

    @app.get("/v1/cubes/{cube_id}/memories/{memory_id}", tags=["memories"])
    async def get_memory(self, cube_id: Id, memory_id: Id, version: int | None = Query(None, ge=1)) -> MemoryItem:
        return await self._cube(cube_id, "get", memory_id, version)

    @app.patch("/v1/cubes/{cube_id}/memories/{memory_id}", tags=["memories"])
    async def update_memory(self, cube_id: Id, memory_id: Id, req: MemoryUpdate) -> MemoryItem:
        vec = None
        if req.text is not None:
            cur: MemoryItem = await self._cube(cube_id, "get", memory_id, None)
            vec = (await self._embed([index_text(req.text, cur.provenance.speaker)]))[0]
        item = await self._cube(cube_id, "update", memory_id, req, vec, AUTHOR)
        await self._invalidate(memory_id)
        return item

    @app.delete("/v1/cubes/{cube_id}/memories/{memory_id}", tags=["memories"])
    async def delete_memory(
        self, cube_id: Id, memory_id: Id, expected_version: int | None = Query(None, ge=1)
    ) -> MemoryItem:
        item = await self._cube(cube_id, "delete", memory_id, expected_version, AUTHOR)
        await self._invalidate(memory_id)
        return item

    @app.post(
        "/v1/cubes/{cube_id}/memories/{memory_id}/purge",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["memories"],
    )
    async def purge_memory(self, cube_id: Id, memory_id: Id) -> Response:
        await self._cube(cube_id, "purge", memory_id)
        await self._invalidate(memory_id)
        return Response(status_code=204)

    @app.get("/v1/cubes/{cube_id}/memories/{memory_id}/history", tags=["memories"])
    async def memory_history(self, cube_id: Id, memory_id: Id) -> list[MemoryItem]:
        return await self._cube(cube_id, "history", memory_id)

    # ------------------------------------------------------------ search

    async def _search(self, cube_ids: list[str], q: SearchQuery) -> SearchResponse:
        start = time.perf_counter()
        qvec = None
        if q.mode != "bm25":
            qvec = (await self._embed([q.query]))[0]
        fan_out = asyncio.Semaphore(MAX_FAN_OUT)

        async def one(cube_id: str) -> list[SearchHit]:
            async with fan_out:
                return await self._cube(cube_id, "search", q, qvec)

        results = await asyncio.gather(*(one(c) for c in cube_ids))
        hits: list[SearchHit] = [h for part in results for h in part]
        hits.sort(key=lambda h: h.score, reverse=True)
        return SearchResponse(hits=hits[: q.top_k], took_ms=(time.perf_counter() - start) * 1000)

    @app.post("/v1/cubes/{cube_id}/search", tags=["search"])
    async def search_cube(self, cube_id: Id, req: SearchQuery) -> SearchResponse:
        return await self._search([cube_id], req)

    @app.post("/v1/search", tags=["search"])
    async def search_cubes(self, req: SearchRequest) -> SearchResponse:
        query = SearchQuery.model_validate(req.model_dump(exclude={"cube_ids"}))
        return await self._search(list(dict.fromkeys(req.cube_ids)), query)

    # ------------------------------------------------------------ chat (activation memory)

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

    async def _invalidate(self, memory_id: str) -> None:
        """Drop caches built from a memory. The edit is already durable: a failure here must not undo its 2xx
        (and cannot leave a stale cache in use: cache keys hash the rendered text)."""
        scheduler = await self._scheduler(start=False)
        if scheduler is not None:
            try:
                await scheduler.invalidate.remote([memory_id])
            except Exception:
                log.exception("invalidating caches built from %s failed", memory_id)

    async def _plan(self, req: ChatRequest) -> tuple[ChatPlan, list[MemoryItem]]:
        """The cached prefix is the cubes' pinned memories (tag "pinned"), the retrieved memories
        riding in the prompt; or, with ``prefix="retrieved"``, the retrieval result itself."""
        active = [LifecycleState.active]
        lists = await asyncio.gather(*(self._cube(c, "list", 0, 1000, active, [], PINNED_TAG) for c in req.cube_ids))
        pinned = [m for page in lists for m in page.items]
        pinned_ids = {m.id for m in pinned}
        messages = list(req.messages)
        retrieved: list[MemoryItem] = []
        question = next((m.content for m in reversed(messages) if m.role == "user"), messages[-1].content)
        if req.top_k:
            found = await self._search(list(req.cube_ids), SearchQuery(query=question[:4096], top_k=req.top_k))
            retrieved = [h.memory for h in found.hits if h.memory.id not in pinned_ids]
        if req.prefix == "retrieved":
            # one prefix per distinct retrieval result, in a stable order so equal sets share a cache
            prefix = sorted(pinned + retrieved, key=lambda m: (m.created_at, m.id))
        else:
            prefix = pinned
            if retrieved:
                context = "Relevant memories:\n" + "\n".join(f"- {m.text}" for m in retrieved)
                messages.insert(0, ChatMessage(role="system", content=context))
        plan = ChatPlan(
            prefix_text=kvcache.render_memories(prefix),
            sources=[m.ref for m in prefix],
            messages=messages,
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            seed=req.seed,
            use_kv=req.use_activation_memory,
        )
        return plan, pinned + retrieved

    @app.post("/v1/chat", tags=["chat"], response_model=ChatResponse)
    async def chat(
        self, req: ChatRequest, x_agent_id: str | None = Header(None, max_length=128, description="the calling agent")
    ) -> Any:
        plan, used = await self._plan(req)
        scheduler = await self._scheduler(start=True)
        placement: Placement = await scheduler.place.remote(plan, req.worker)
        try:
            worker = self._worker(placement.worker)
        except Exception:
            await scheduler.record.remote(placement, None)
            raise
        if req.stream:
            return StreamingResponse(
                self._sse(scheduler, worker, placement, plan, used, x_agent_id), media_type="text/event-stream"
            )
        outcome: ChatOutcome | None = None
        try:
            outcome = await worker.chat.remote(plan, placement.adopt, placement.adopt_entry)
        finally:
            info = await scheduler.record.remote(placement, outcome)
        assert outcome is not None
        return _response(outcome, info, used, x_agent_id)

    async def _sse(  # type: ignore[no-untyped-def]
        self,
        scheduler: Any,
        worker: Any,
        placement: Placement,
        plan: ChatPlan,
        used: list[MemoryItem],
        agent: str | None,
    ):
        outcome: ChatOutcome | None = None
        try:
            async for ref in worker.chat_stream.remote(plan, placement.adopt, placement.adopt_entry):
                piece = await ref
                if isinstance(piece, ChatOutcome):
                    outcome = piece
                else:
                    yield f"event: token\ndata: {json.dumps({'text': piece})}\n\n"
        finally:
            info = await scheduler.record.remote(placement, outcome)
        if outcome is not None:
            yield f"event: done\ndata: {_response(outcome, info, used, agent).model_dump_json()}\n\n"


class AppArgs(BaseModel):
    """Arguments of ``build_app``: a full config, or none for the environment's defaults."""

    model_config = ConfigDict(extra="forbid")
    config: MemosConfig | None = None


def build_app(args: dict[str, Any] | None = None) -> Application:
    parsed = AppArgs.model_validate(args or {})
    config = parsed.config or MemosConfig.from_env()
    return MemosIngress.options(  # type: ignore[attr-defined]
        num_replicas=config.serve.num_replicas,
        ray_actor_options={"num_cpus": config.serve.replica_num_cpus},
    ).bind(config)


def start(config: MemosConfig, blocking: bool = False) -> str:
    """Start the shared actors and Serve on ``config.serve``, deploy the app; returns the base URL."""
    ensure_runtime(config)  # from the driver: the models load before the first request waits on them
    ensure_scheduler(config)
    serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
    serve.run(build_app({"config": config.model_dump(mode="json")}), name="memos", route_prefix="/", blocking=blocking)
    return f"http://{config.serve.host}:{config.serve.port}"
