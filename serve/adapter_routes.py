"""Parametric memory routes: train a LoRA adapter from a cube's memories, follow the job, list a
cube's adapter versions, choose the active one, delete one.

The routes stand on the chat mixin, which owns the way to the Scheduler and its model workers.
Training runs off the request path (a Ray task, see ``actors/adapters.py``): the POST answers 202
with the job, and ``GET /v1/jobs/{id}`` reports its state, percent and loss. Training needs the
write role on the cube; choosing the active adapter too; deleting one, admin.
"""

from __future__ import annotations

from fastapi import Request, Response, status

from memos_ray.errors import JobNotFound, MemosError
from memos_ray.types import (
    ActiveAdapter,
    AdapterList,
    Caller,
    Id,
    LifecycleState,
    MemoryList,
    Role,
    TrainingJob,
    TrainRequest,
)
from serve.base import Auth, act, app, shielded
from serve.chat_routes import ChatRoutes


class AdapterRoutes(ChatRoutes):
    @app.post(
        "/v1/cubes/{cube_id}/adapters",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["adapters"],
        dependencies=[act("adapter.train")],
    )
    @shielded
    async def train_adapter(self, request: Request, cube_id: Id, req: TrainRequest, who: Caller = Auth) -> TrainingJob:
        """Start training an adapter from the cube's active memories (facts by default, or a selection)."""
        page: MemoryList = await self._cube(
            who, cube_id, Role.write, "list", 0, 100_000, [LifecycleState.active], list(req.kinds), None
        )
        chosen = [
            m
            for m in page.items
            if (not req.tags_any or set(m.tags) & set(req.tags_any))
            and (req.memory_ids is None or m.id in set(req.memory_ids))
        ][: req.max_memories]
        job: TrainingJob = await self._call(
            self.adapters,
            "start_training",
            cube_id,
            [m.text for m in chosen],
            [m.ref for m in chosen],
            req.settings,
            req.activate,
            who.principal,
        )
        details = {"job_id": job.id, "memories": len(chosen), "settings": req.settings.model_dump()}
        await self._audit(request, cube_id=cube_id, details=details, status=202)
        return job

    @app.get("/v1/jobs/{job_id}", tags=["adapters"], dependencies=[act("adapter.read")])
    async def training_job(self, job_id: Id, who: Caller = Auth) -> TrainingJob:
        """A training job's state, step, percent and loss (read role on its cube)."""
        job: TrainingJob = await self._call(self.adapters, "job", job_id)
        try:
            await self._call(self.directory, "authorize", job.cube_id, who, Role.read)
        except MemosError:  # someone else's job, or its cube is gone: it does not exist for this caller
            raise JobNotFound(f"job {job_id} not found", {"job_id": job_id, "cube_id": job.cube_id}) from None
        return job

    @app.get("/v1/cubes/{cube_id}/adapters", tags=["adapters"], dependencies=[act("adapter.read")])
    async def list_adapters(self, cube_id: Id, who: Caller = Auth) -> AdapterList:
        """The cube's adapter versions (settings, sources, metrics, stale mark) and the active one."""
        await self._call(self.directory, "authorize", cube_id, who, Role.read)
        return await self._call(self.adapters, "listing", cube_id)

    @app.put("/v1/cubes/{cube_id}/adapters/active", tags=["adapters"], dependencies=[act("adapter.activate")])
    @shielded
    async def activate_adapter(
        self, request: Request, cube_id: Id, req: ActiveAdapter, who: Caller = Auth
    ) -> AdapterList:
        """Choose the adapter chat runs under for this cube (null: the base model)."""
        await self._call(self.directory, "authorize", cube_id, who, Role.write)
        listing: AdapterList = await self._call(self.adapters, "set_active", cube_id, req.adapter_id)
        await self._audit(request, cube_id=cube_id, details={"adapter_id": req.adapter_id})
        return listing

    @app.delete(
        "/v1/cubes/{cube_id}/adapters/{adapter_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["adapters"],
        dependencies=[act("adapter.delete")],
    )
    @shielded
    async def delete_adapter(self, request: Request, cube_id: Id, adapter_id: Id, who: Caller = Auth) -> Response:
        await self._call(self.directory, "authorize", cube_id, who, Role.admin)
        await self._call(self.adapters, "delete", cube_id, adapter_id)
        await self._unload_adapters([adapter_id])
        await self._audit(request, cube_id=cube_id, details={"adapter_id": adapter_id}, status=204)
        return Response(status_code=204)
