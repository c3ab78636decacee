"""One Ray actor per MemCube, named ``memcube:<id>`` in the memos namespace.

A thin shell over :class:`memos_ray.plaintext.cube.MemCube`, holding the cube's index in its own
process. It is an asyncio actor so that change-feed subscribers can wait in it
(``wait_changes``) without blocking it; every change to the cube's state is synchronous code that
runs to completion on the event loop, one at a time, so state changes need no locks. After an
edit, delete or purge is durable the actor runs its cascade (``actors/cascade.py``): the KV
caches built from the memory and the adapters that learned it, through a durable outbox, so no
entry point can skip it and a failure is retried. Restarted by
Ray after a crash (``max_restarts=-1``), it reloads everything from durable storage; the
Directory passivates it (``passivate`` flushes and releases the file) and reactivates it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from actors.calls import actor_class, read_only
from actors.cascade import Cascade
from memos_ray.activation.prompt import PINNED_TAG
from memos_ray.config import MemosConfig
from memos_ray.errors import Unavailable
from memos_ray.plaintext import erasure
from memos_ray.plaintext.cube import MemCube
from memos_ray.plaintext.outbox import CascadeOutbox
from memos_ray.types import (
    Added,
    ChangeBatch,
    CubeMeta,
    LifecycleState,
    LifecycleSweep,
    MemoryChangeKind,
    MemoryCreate,
    MemoryItem,
    MemoryKind,
    MemoryList,
    MemoryUpdate,
    PendingCascade,
    Purged,
    Recall,
    SearchHit,
    SearchQuery,
    TrainRequest,
    WorkingSet,
)

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)
CASCADE_TIMEOUT_S = 30.0  # one attempt at a cascade; passivation waits at most this for changes in flight


def cube_actor_name(cube_id: str) -> str:
    return f"memcube:{cube_id}"


def _passivated(cube_id: str) -> Unavailable:
    return Unavailable(f"cube {cube_id} was passivated", {"retry": True})


def _open(method: F) -> F:
    """Calls that arrive after passivation fail with Unavailable: the caller reactivates and retries.
    The wrapper is a coroutine (this is an asyncio actor). A method changes the cube's state without
    awaiting; only what follows a durable change (its cascade) awaits."""

    @functools.wraps(method)
    async def wrapper(self: CubeHost, *args: Any, **kwargs: Any) -> Any:
        if self.closed:
            raise _passivated(self.cube.meta.id)
        self._retry_later()  # a no-op unless an earlier life left cascades to finish
        result = method(self, *args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    return wrapper  # type: ignore[return-value]


class CubeHost:
    """Hosts one :class:`MemCube` in its own process (the actor is :data:`CubeActor`)."""

    def __init__(self, meta: CubeMeta, config: MemosConfig) -> None:
        start = time.perf_counter()
        self.cube = MemCube(meta, config.storage, config.search, config.embedder.dim, config.scheduler.lifecycle)
        self.load_s = time.perf_counter() - start
        self.closed = False
        self._changed: asyncio.Event | None = None
        self.cascade = Cascade(config.namespace)
        self.outbox = CascadeOutbox.of(config.storage.data_dir, meta.id)  # a crashed life may have left some
        self._retrying: asyncio.Task[None] | None = None
        self._writes = 0  # changes in flight (durable, their cascade still running): passivation waits
        self._quiet = asyncio.Event()

    # ------------------------------------------------------------ the cascade

    @contextlib.asynccontextmanager
    async def _change(self, memory_ids: builtins.list[str], what: MemoryChangeKind) -> AsyncIterator[None]:
        """A durable change and its cascade, through the outbox: the intent is written before the change
        (so a death in between cannot lose it; the cascade is idempotent) and removed once done. A change
        that fails takes its intent back. A purge raises when its cascade cannot be done now (erased text
        must not keep answering from a cache or an adapter); an edit or delete has answered for itself and
        its cascade is retried in the background. Passivation waits for changes in flight (``_writes``)."""
        item = PendingCascade(memory_ids=memory_ids, what=what)
        self.outbox.add(item)
        with self._in_flight():
            try:
                with self._changing():
                    yield
            except BaseException:
                # a purge whose store already committed to the erase (finished at the next open) keeps its cascade
                if what != "purged" or not self.cube.store.state.rewrite_pending:
                    self.outbox.update(item, None)
                raise
            done = await self._attempt(item)
        if not done and what == "purged":
            raise Unavailable(
                f"memory {item.memory_ids[0]} was erased from cube {self.cube.meta.id}, but the caches and adapters "
                "built from it could not be reached yet; this is retried until done, and a repeated purge waits for it",
                {"cube_id": self.cube.meta.id, "memory_id": item.memory_ids[0], "cascade": "pending"},
            )

    async def _attempt(self, item: PendingCascade) -> bool:
        try:
            await asyncio.wait_for(
                self.cascade.memories_changed(self.cube.meta.id, item.memory_ids, item.what), CASCADE_TIMEOUT_S
            )
        except Exception as exc:
            log.warning("cascade of %s %s in cube %s failed: %r", item.what, item.memory_ids, self.cube.meta.id, exc)
            current = next((i for i in self.outbox.items if i == item), None)
            if current is not None:
                self.outbox.update(current, item.model_copy(update={"attempts": item.attempts + 1, "error": repr(exc)}))
            self._retry_later()
            return False
        current = next((i for i in self.outbox.items if i == item), None)
        if current is not None:
            self.outbox.update(current, None)
        return True

    def _retry_later(self) -> None:
        if self.outbox.items and (self._retrying is None or self._retrying.done()):
            self._retrying = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        delay = 0.5
        while self.outbox.items and not self.closed:
            await asyncio.sleep(delay)
            for item in list(self.outbox.items):
                await self._attempt(item)
            delay = min(delay * 2, 30.0)

    def _pending_purge(self, memory_id: str) -> PendingCascade | None:
        return next((i for i in self.outbox.items if i.what == "purged" and memory_id in i.memory_ids), None)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    @read_only
    async def wait_changes(self, after_seq: int | None, timeout_s: float, limit: int = 1_000) -> ChangeBatch:
        """Changes after ``after_seq`` (None: from now on), waiting up to ``timeout_s`` for the first."""
        deadline = time.monotonic() + timeout_s
        after = self.cube.seq if after_seq is None else after_seq
        while True:
            if self.closed:
                raise _passivated(self.cube.meta.id)
            events = self.cube.changes_after(after, limit)
            left = deadline - time.monotonic()
            if events or left <= 0:
                return ChangeBatch(events=events, seq=events[-1].seq if events else max(after, self.cube.seq))
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    @_open
    def ready(self) -> CubeMeta:
        return self.cube.live_meta()

    @_open
    @read_only
    def meta(self) -> CubeMeta:
        return self.cube.live_meta()

    @_open
    async def add(
        self, items: list[MemoryCreate], vecs: np.ndarray, author: str, redactions: list[dict[str, int]] | None = None
    ) -> Added:
        """New memories, and what they supersede (its caches and adapters are reached by the cascade)."""
        superseded = sorted({m for item in items for m in item.supersedes})
        if not superseded:
            with self._changing():  # nothing was built from a new memory yet: no cascade
                return self.cube.add(items, vecs, author, redactions)
        async with self._change(superseded, "edited"):
            added = self.cube.add(items, vecs, author, redactions)
        return added

    @_open
    @read_only
    def get(self, memory_id: str, version: int | None = None) -> MemoryItem:
        return self.cube.get(memory_id, version)

    @_open
    @read_only
    def list(
        self, offset: int, limit: int, states: list[LifecycleState], kinds: list[MemoryKind], tag: str | None
    ) -> MemoryList:
        return self.cube.page(offset, limit, states, kinds, tag)

    @_open
    async def update(
        self,
        memory_id: str,
        patch: MemoryUpdate,
        vec: np.ndarray | None,
        author: str,
        redactions: dict[str, int] | None = None,
    ) -> MemoryItem:
        touched = [memory_id, *(patch.supersedes or [])]
        cur = self.cube.latest.get(memory_id)
        if cur is not None and patch.state is not None:  # a restore changes the memory it was linked to
            touched += [m for m in (cur.merged_into, cur.superseded_by) if m is not None]
        async with self._change(touched, "edited"):  # any edit: tags decide what is pinned, too
            item = self.cube.update(memory_id, patch, vec, author, redactions)
        return item

    @_open
    async def delete(self, memory_id: str, expected_version: int | None, author: str) -> MemoryItem:
        async with self._change([memory_id], "deleted"):
            item = self.cube.delete(memory_id, expected_version, author)
        return item

    @_open
    async def purge(self, memory_id: str) -> Purged:
        """Erase the memory and what carries its text (durable, no file keeps it), then the caches, adapters
        and usage built from them (the cascade): answers when all is done."""
        pending = self._pending_purge(memory_id)
        if pending is not None and memory_id not in self.cube.latest:  # erased; its cascade failed: retry it
            if not await self._attempt(pending):
                raise Unavailable(
                    f"memory {memory_id} is erased; its caches and adapters are still being reached",
                    {"cube_id": self.cube.meta.id, "memory_id": memory_id, "cascade": "pending"},
                )
            return Purged(memory_ids=pending.memory_ids)
        if memory_id not in self.cube.latest:
            self.cube.get(memory_id)  # raises MemoryNotFound
        reach = erasure.reach(self.cube.latest, memory_id)
        async with self._change(reach, "purged"):
            purged = self.cube.purge(memory_id)
        return purged

    @_open
    async def sweep_lifecycle(
        self, used_at: dict[str, float], now: float, merge_after_seq: int, author: str
    ) -> LifecycleSweep:
        """The MemScheduler's lifecycle sweep of this cube (moves are versions; the cascade reaches the caches
        and adapters built from the memories that left default search)."""
        policy = self.cube.policy
        if not policy.sweeps:
            return LifecycleSweep(cube_id=self.cube.meta.id, merge_seq=merge_after_seq, seq=self.cube.seq)
        written: list[PendingCascade] = []

        def before(moved: builtins.list[str]) -> None:  # the intent first, as for an edit
            written.append(PendingCascade(memory_ids=moved, what="edited"))
            self.outbox.add(written[0])

        swept = self.cube.sweep_lifecycle(used_at, now, merge_after_seq, PINNED_TAG, author, before)
        if written:  # like an edit's cascade: retried in the background when it fails
            self._wake()
            with self._in_flight():
                await self._attempt(written[0])
        return swept

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """A durable change whose cascade still runs: passivation waits for it."""
        self._writes += 1
        try:
            yield
        finally:
            self._writes -= 1
            if self._writes == 0:
                self._quiet.set()

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        try:
            yield
        finally:
            self._wake()

    @_open
    @read_only
    def history(self, memory_id: str) -> builtins.list[MemoryItem]:
        return self.cube.versions(memory_id)

    @_open
    @read_only
    def search(self, q: SearchQuery, qvec: np.ndarray | None) -> builtins.list[SearchHit]:
        return self.cube.search(q, qvec)

    @_open
    @read_only
    def recall(self, pinned_tag: str, q: SearchQuery | None, qvec: np.ndarray | None) -> Recall:
        return self.cube.recall(pinned_tag, q, qvec)

    @_open
    def set_working_set(
        self,
        ranked: builtins.list[str],
        token_budget: int,
        pinned_tag: str,
        min_tokens: int = 0,
        commit: bool = True,
    ) -> WorkingSet:
        """The MemScheduler's pick: this cube holds it (until passivation) and returns it with every recall;
        ``commit=False`` proposes it without holding it."""
        return self.cube.set_working_set(ranked, token_budget, pinned_tag, min_tokens, commit)

    @_open
    @read_only
    def training_set(self, req: TrainRequest) -> builtins.list[MemoryItem]:
        return self.cube.training_set(req)

    @_open
    def set_meta(self, meta: CubeMeta) -> None:
        """The Directory changed the cube's owner, grants or quotas."""
        self.cube.meta = meta

    @_open
    async def passivate(self) -> CubeMeta:
        """Refuse new calls, let the changes in flight finish their cascades (bounded: what is left stays in
        the outbox, and the Directory starts the cube again for it), flush, release the storage file and
        report final counters; the Directory then kills us. So a call that did not finish was refused, and a
        caller may retry it."""
        self.closed = True
        self._wake()
        if self._writes:
            self._quiet.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), CASCADE_TIMEOUT_S)
        meta = self.cube.live_meta()
        self.cube.close()
        return meta


CubeActor = actor_class(CubeHost, max_restarts=-1, max_task_retries=0, max_concurrency=1000)
"""One per live cube, named :func:`cube_actor_name`; started and passivated by the Directory."""
