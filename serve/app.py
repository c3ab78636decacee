"""The HTTP interface: a Ray Serve deployment with a FastAPI ingress (``/v1``, OpenAPI at ``/docs``).

The ingress validates input, runs the MemReader, asks the Embedder for vectors and the
Directory for the cube's actor, and calls the cube. It holds no memory state itself, so
replicas scale freely.

    serve run serve.app:build_app          # or a Serve config, see clusters/serve_config.yaml
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Query, Request, Response, status
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application

from actors.runtime import ensure_runtime, ensure_scheduler
from memos_ray import __version__
from memos_ray.config import MemosConfig
from memos_ray.errors import Forbidden
from memos_ray.plaintext.reader import read_messages
from memos_ray.plaintext.text import index_text
from memos_ray.types import (
    AddResult,
    Caller,
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
    Role,
    SearchQuery,
    SearchRequest,
    SearchResponse,
    Status,
)
from serve.adapter_routes import AdapterRoutes
from serve.base import Auth, act, app, shielded
from serve.governance import GovernanceRoutes


@serve.deployment(name="memos_ingress")
@serve.ingress(app)
class MemosIngress(GovernanceRoutes, AdapterRoutes):
    """Cubes, memories and search here; chat, adapters and governance in their mixins; plumbing in ``serve.base``."""

    def __init__(self, config: MemosConfig) -> None:
        super().__init__(config)

    # ------------------------------------------------------------ health

    @app.get("/v1/health", tags=["system"])
    async def health(self) -> Health:
        """Liveness; the one route that needs no key."""
        return Health(status="ok", version=__version__)

    @app.get("/v1/status", tags=["system"], dependencies=[act("status")])
    async def get_status(self, who: Caller = Auth) -> Status:
        """Cluster-wide counters: for administrators (they span every tenant)."""
        if not who.admin:
            raise Forbidden("the cluster's status is for administrators", {"principal": who.principal})
        directory, embedder = await asyncio.gather(self.directory.stats.remote(), self.embedder.stats.remote())
        return Status(version=__version__, directory=directory.model_dump(), embedder=embedder.model_dump())

    # ------------------------------------------------------------ cubes

    @app.post("/v1/cubes", status_code=status.HTTP_201_CREATED, tags=["cubes"], dependencies=[act("cube.create")])
    @shielded
    async def create_cube(self, request: Request, req: CubeCreate, who: Caller = Auth) -> CubeMeta:
        """A new cube, owned by the caller."""
        meta: CubeMeta = await self._call(self.directory, "create_cube", req, who)
        await self._audit(request, cube_id=meta.id, status=201, details={"quotas": req.quotas.model_dump()})
        return meta

    @app.get("/v1/cubes", tags=["cubes"], dependencies=[act("cube.read")])
    async def list_cubes(
        self, offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000), who: Caller = Auth
    ) -> CubeList:
        """The cubes the caller may read."""
        return await self._call(self.directory, "list_cubes", who, offset, limit)

    @app.get("/v1/cubes/{cube_id}", tags=["cubes"], dependencies=[act("cube.read")])
    async def get_cube(self, cube_id: Id, who: Caller = Auth) -> CubeMeta:
        return await self._call(self.directory, "get_cube", cube_id, who)

    @app.delete(
        "/v1/cubes/{cube_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["cubes"], dependencies=[act("cube.delete")]
    )
    @shielded
    async def delete_cube(self, request: Request, cube_id: Id, who: Caller = Auth) -> Response:
        await self._call(self.directory, "delete_cube", cube_id, who)
        await self._forget_adapters(cube_id)
        await self._audit(request, cube_id=cube_id, status=204)
        return Response(status_code=204)

    # ------------------------------------------------------------ memories

    async def _add(self, request: Request, who: Caller, cube_id: str, items: list[MemoryCreate]) -> list[MemoryItem]:
        """Redact, embed, write; one audit record per memory (redactions recorded with what was masked)."""
        # 404/403 before spending an embedding; the add needs the cube live anyway.
        await self._call(self.directory, "activate", cube_id, who, Role.write)
        masked = [self.redactor.apply(m) for m in items]
        items = [m for m, _ in masked]
        found = [f for _, f in masked]
        vecs = await self._embed([index_text(m.text, m.source.speaker) for m in items])
        added: list[MemoryItem] = await self._cube(who, cube_id, Role.write, "add", items, vecs, who.principal, found)
        details = [
            {"source": m.provenance.source_type.value, **({"redacted": f} if f else {})}
            for m, f in zip(added, found, strict=True)
        ]
        await self._audit(request, cube_id=cube_id, memory_ids=[m.id for m in added], details=details, status=201)
        return added

    @app.post(
        "/v1/cubes/{cube_id}/memories",
        status_code=status.HTTP_201_CREATED,
        tags=["memories"],
        dependencies=[act("memory.add")],
    )
    @shielded
    async def add_memory(self, request: Request, cube_id: Id, req: MemoryCreate, who: Caller = Auth) -> MemoryItem:
        return (await self._add(request, who, cube_id, [req]))[0]

    @app.post(
        "/v1/cubes/{cube_id}/memories/batch",
        status_code=status.HTTP_201_CREATED,
        tags=["memories"],
        dependencies=[act("memory.add")],
    )
    @shielded
    async def add_memories(
        self, request: Request, cube_id: Id, req: MemoryBatchCreate, who: Caller = Auth
    ) -> AddResult:
        items = await self._add(request, who, cube_id, req.items)
        return AddResult(items=[i.ref for i in items])

    @app.post(
        "/v1/cubes/{cube_id}/messages",
        status_code=status.HTTP_201_CREATED,
        tags=["memories"],
        dependencies=[act("memory.add")],
    )
    @shielded
    async def add_messages(self, request: Request, cube_id: Id, req: MessagesCreate, who: Caller = Auth) -> AddResult:
        req, masked = self.redactor.messages(req)  # before splitting: no secret straddles two chunks
        items = await self._add(request, who, cube_id, read_messages(req))
        if any(masked):
            events = [
                {"message_index": i, "message_id": m.id, "redacted": found}
                for i, (m, found) in enumerate(zip(req.messages, masked, strict=True))
                if found
            ]
            await self._audit(request, cube_id=cube_id, action="memory.redact", details=events, status=201)
        return AddResult(items=[i.ref for i in items])

    @app.get("/v1/cubes/{cube_id}/memories", tags=["memories"], dependencies=[act("memory.read")])
    async def list_memories(
        self,
        cube_id: Id,
        offset: int = Query(0, ge=0),
        limit: int = Query(50, ge=1, le=1000),
        state: list[LifecycleState] = Query([LifecycleState.active]),
        kind: list[MemoryKind] = Query([]),
        tag: str | None = Query(None, max_length=64),
        who: Caller = Auth,
    ) -> MemoryList:
        return await self._cube(who, cube_id, Role.read, "list", offset, limit, state, kind, tag)

    @app.get("/v1/cubes/{cube_id}/memories/{memory_id}", tags=["memories"], dependencies=[act("memory.read")])
    async def get_memory(
        self, cube_id: Id, memory_id: Id, version: int | None = Query(None, ge=1), who: Caller = Auth
    ) -> MemoryItem:
        return await self._cube(who, cube_id, Role.read, "get", memory_id, version)

    @app.patch("/v1/cubes/{cube_id}/memories/{memory_id}", tags=["memories"], dependencies=[act("memory.update")])
    @shielded
    async def update_memory(
        self, request: Request, cube_id: Id, memory_id: Id, req: MemoryUpdate, who: Caller = Auth
    ) -> MemoryItem:
        req, found = self.redactor.apply(req)
        vec = None
        if req.text is not None:
            cur: MemoryItem = await self._cube(who, cube_id, Role.write, "get", memory_id, None)
            vec = (await self._embed([index_text(req.text, cur.provenance.speaker)]))[0]
        item: MemoryItem = await self._cube(
            who, cube_id, Role.write, "update", memory_id, req, vec, who.principal, found
        )
        await self._invalidate(cube_id, memory_id, "edited")
        details = {"version": item.version, **({"redacted": found} if found else {})}
        await self._audit(request, cube_id=cube_id, memory_ids=[memory_id], details=details)
        return item

    @app.delete("/v1/cubes/{cube_id}/memories/{memory_id}", tags=["memories"], dependencies=[act("memory.delete")])
    @shielded
    async def delete_memory(
        self,
        request: Request,
        cube_id: Id,
        memory_id: Id,
        expected_version: int | None = Query(None, ge=1),
        who: Caller = Auth,
    ) -> MemoryItem:
        item: MemoryItem = await self._cube(
            who, cube_id, Role.write, "delete", memory_id, expected_version, who.principal
        )
        await self._invalidate(cube_id, memory_id, "deleted")
        await self._audit(request, cube_id=cube_id, memory_ids=[memory_id], details={"version": item.version})
        return item

    @app.post(
        "/v1/cubes/{cube_id}/memories/{memory_id}/purge",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["memories"],
        dependencies=[act("memory.purge")],
    )
    @shielded
    async def purge_memory(self, request: Request, cube_id: Id, memory_id: Id, who: Caller = Auth) -> Response:
        """Erase every version of a memory (irreversible): admin role."""
        await self._cube(who, cube_id, Role.admin, "purge", memory_id)
        await self._invalidate(cube_id, memory_id, "purged")
        await self._audit(request, cube_id=cube_id, memory_ids=[memory_id], status=204)
        return Response(status_code=204)

    @app.get("/v1/cubes/{cube_id}/memories/{memory_id}/history", tags=["memories"], dependencies=[act("memory.read")])
    async def memory_history(self, cube_id: Id, memory_id: Id, who: Caller = Auth) -> list[MemoryItem]:
        return await self._cube(who, cube_id, Role.read, "history", memory_id)

    # ------------------------------------------------------------ search

    @app.post("/v1/cubes/{cube_id}/search", tags=["search"], dependencies=[act("search")])
    async def search_cube(self, cube_id: Id, req: SearchQuery, who: Caller = Auth) -> SearchResponse:
        return await self._search(who, [cube_id], req)

    @app.post("/v1/search", tags=["search"], dependencies=[act("search")])
    async def search_cubes(self, req: SearchRequest, who: Caller = Auth) -> SearchResponse:
        """Search several cubes: the ones named (each must be readable), or every cube the caller may read."""
        query = SearchQuery.model_validate(req.model_dump(exclude={"cube_ids"}))
        cube_ids = list(dict.fromkeys(req.cube_ids)) if req.cube_ids is not None else None
        return await self._search(who, cube_ids, query)


class AppArgs(BaseModel):
    """Arguments of ``build_app``: a full config, or none for the environment's defaults."""

    model_config = ConfigDict(extra="forbid")
    config: MemosConfig | None = None


def build_app(args: dict[str, Any] | None = None) -> Application:
    parsed = AppArgs.model_validate(args or {})
    config = parsed.config or MemosConfig.from_env()
    return MemosIngress.options(  # type: ignore[attr-defined]
        num_replicas=config.serve.num_replicas,
        max_ongoing_requests=config.serve.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.serve.replica_num_cpus},
    ).bind(config)


def start(config: MemosConfig, blocking: bool = False) -> str:
    """Start the shared actors and Serve on ``config.serve``, deploy the app; returns the base URL."""
    ensure_runtime(config)  # from the driver: the models load before the first request waits on them
    ensure_scheduler(config)
    serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
    serve.run(build_app({"config": config.model_dump(mode="json")}), name="memos", route_prefix="/", blocking=blocking)
    return f"http://{config.serve.host}:{config.serve.port}"
