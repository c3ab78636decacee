"""The way into cube actors for every entry point: one activation (handle and role together), typed
calls, and the retry after a passivation or a crash; plus search over several cubes.

    cube = await cubes.open(cube_id, who, Role.write)
    added = await cube.call(CubeHost.add, items, vecs, who.principal, found)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import numpy as np
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from actors.calls import call, is_read_only
from actors.cube import CubeHost
from actors.directory import Activation, Directory
from memos_ray.errors import Unavailable
from memos_ray.types import MAX_SEARCH_CUBES, Caller, Role, SearchHit, SearchQuery, SearchResponse

if TYPE_CHECKING:
    from actors.usage import UsageRecorder

P = ParamSpec("P")
R = TypeVar("R")
MAX_FAN_OUT = 8  # cubes one search activates at once: a wide search must not flush every warm cube
ATTEMPTS = 3


class CubeRef:
    """One caller's way into one live cube, with the role it holds there."""

    def __init__(self, directory: ActorHandle, activation: Activation, who: Caller | None, need: Role) -> None:
        self.directory = directory
        self.activation = activation
        self.who = who
        self.need = need

    @property
    def cube_id(self) -> str:
        return self.activation.cube_id

    async def call(
        self, method: Callable[Concatenate[CubeHost, int, P], Awaitable[R]], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Call the cube's actor, reactivating it when it was passivated under us. A passivated actor
        refused the call, or died after passivating without running it: always safe to retry. One that
        crashed may have applied a write: only methods declared :func:`read_only` retry."""
        for attempt in range(ATTEMPTS):
            handle, lease = self.activation.handle, self.activation.lease
            try:  # every cube call passes its life's lease first (see actors/cube.py)
                return await call(handle, method, lease, *args, **kwargs)
            except Exception as exc:
                died = isinstance(exc, RayActorError)
                retired = died and await call(self.directory, Directory.drop_dead, self.cube_id, handle)
                passivated = isinstance(exc, Unavailable) and bool(exc.details.get("retry"))
                if attempt == ATTEMPTS - 1 or not (passivated or retired or (died and is_read_only(method))):
                    raise
            self.activation = await call(self.directory, Directory.activate, self.cube_id, self.who, self.need)
        raise Unavailable(f"cube {self.cube_id} unavailable", {"cube_id": self.cube_id})  # pragma: no cover


class Cubes:
    def __init__(self, directory: ActorHandle, usage: UsageRecorder | None = None) -> None:
        self.directory = directory
        self.usage = usage  # None: internal callers (the MemScheduler) whose reads are not use

    async def open(self, cube_id: str, who: Caller | None, need: Role) -> CubeRef:
        """404/403 unless ``who`` holds ``need`` on the cube (None: an internal call); one Directory call."""
        activation = await call(self.directory, Directory.activate, cube_id, who, need)
        return CubeRef(self.directory, activation, who, need)

    async def authorize(self, cube_ids: list[str], who: Caller, need: Role) -> None:
        """All or nothing: 404/403 for the first cube ``who`` may not use, before any is touched."""
        await call(self.directory, Directory.authorize_many, cube_ids, who, need)

    async def open_many(self, cube_ids: list[str], who: Caller, need: Role) -> list[CubeRef]:
        """Every cube live (a chat names at most a few), authorized all or nothing first; one Directory
        call for one cube."""
        if len(cube_ids) == 1:
            return [await self.open(cube_ids[0], who, need)]
        await self.authorize(cube_ids, who, need)
        return list(await asyncio.gather(*(self.open(c, who, need) for c in cube_ids)))

    async def readable(self, who: Caller) -> list[str]:
        """The cubes ``who`` may read, most recently changed first (at most a search's worth)."""
        return (await call(self.directory, Directory.readable, who))[:MAX_SEARCH_CUBES]

    async def search(
        self,
        who: Caller,
        cube_ids: list[str] | None,
        q: SearchQuery,
        embed: Callable[[list[str]], Awaitable[np.ndarray]],
    ) -> SearchResponse:
        """Search ``cube_ids`` (all readable by ``who``, or 404/403 before any is touched), or, with None,
        every cube ``who`` may read, most recently changed first; hits merged by score."""
        start = time.perf_counter()
        if cube_ids is None:
            cube_ids = await self.readable(who)
        # the query's vector is made while the cubes are authorized (and opened): two round trips at once
        vec_of = asyncio.ensure_future(embed([q.query])) if q.mode != "bm25" and cube_ids else None
        first: CubeRef | None = None
        try:
            if len(cube_ids) == 1:  # activation authorizes it: one call
                first = await self.open(cube_ids[0], who, Role.read)
            elif cube_ids:
                await self.authorize(cube_ids, who, Role.read)
        except BaseException:
            if vec_of is not None:
                vec_of.cancel()
            raise
        vec = (await vec_of)[0] if vec_of is not None else None
        fan_out = asyncio.Semaphore(MAX_FAN_OUT)

        async def one(cube_id: str) -> list[SearchHit]:
            async with fan_out:  # each cube is activated only when its turn comes
                cube = first or await self.open(cube_id, who, Role.read)
                return await cube.call(CubeHost.search, q, vec)

        results = await asyncio.gather(*(one(c) for c in cube_ids))
        hits = sorted((h for part in results for h in part), key=lambda h: h.score, reverse=True)[: q.top_k]
        if self.usage is not None:
            self.usage.searched(who.principal, [h.memory for h in hits])
        return SearchResponse(hits=hits, took_ms=(time.perf_counter() - start) * 1000, cube_ids=cube_ids)


__all__ = ["CubeRef", "Cubes"]
