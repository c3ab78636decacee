"""Cube actors: each hosts one live MemCube at a time, in its own process, holding its index.

A thin shell over :class:`memos_ray.plaintext.cube.MemCube`. It is an asyncio actor so that change-feed
subscribers can wait in it (``wait_changes``) without blocking it; every change to the cube's state is
synchronous code that runs to completion on the event loop, one at a time, so state changes need no
locks. After an edit, delete or purge is durable the actor runs its cascade (``actors/cascade.py``): the
KV caches built from the memory and the adapters that learned it, through a durable outbox, so no entry
point can skip it and a failure is retried.

The Directory keeps a few of these actors started with nothing loaded (spares): activating a cube is
``open`` on a spare (its checkpoint and the rows after it, ~tens of ms) instead of a new process (~1 s of
start and imports). ``passivate`` flushes, releases the cube and empties the actor, which goes back to
the spares. Each life has a lease, a number the Directory hands to callers with the handle: a call made
for an earlier life is refused (``Unavailable``, retry), so a call can never reach another cube. The
process imports no storage client: rows go to the cube's storage actor (``actors/rows.py``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ctypes
import functools
import gc
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

import numpy as np

from actors.calls import NamedActors, actor_class, call, read_only
from actors.cascade import Cascade
from actors.embedder import EMBEDDER_NAME, Embedder
from actors.rows import ShardRows, storage_name
from memos_ray.activation.prompt import PINNED_TAG
from memos_ray.config import MemosConfig
from memos_ray.errors import Unavailable
from memos_ray.plaintext import erasure
from memos_ray.plaintext.cube import MemCube
from memos_ray.plaintext.outbox import CascadeOutbox, legacy_items, remove_legacy
from memos_ray.plaintext.words import WordNeighbours
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
    Released,
    SearchHit,
    SearchQuery,
    TrainRequest,
    WorkingSet,
)

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)
CASCADE_TIMEOUT_S = 30.0  # one attempt at a cascade; passivation waits at most this for changes in flight


def _release_memory(enough_mib: float) -> float:
    """Give a passivated cube's memory back to the system (glibc returns its free heap; when that leaves more
    than ``enough_mib``, the cycles it left are collected first); returns what this process alone still
    holds, in MiB."""
    _trim()
    footprint = _footprint_mib()
    if footprint > enough_mib:
        gc.collect()
        _trim()
        footprint = _footprint_mib()
    return footprint


def _trim() -> None:
    """glibc's free heap back to the system."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _outbox_of(rows: ShardRows, data_dir: Path, cube_id: str) -> CascadeOutbox:
    """The cube's outbox, kept in its counters; an earlier version's outbox file on this node is taken in."""
    items = list(rows.state.cascades)
    legacy = [i for i in legacy_items(data_dir, cube_id) if i not in items]
    if legacy:
        items += legacy
        rows.set_cascades(items)
    remove_legacy(data_dir, cube_id)
    return CascadeOutbox(items, rows.set_cascades)


def _footprint_mib() -> float:
    """What this process alone holds (its USS; Linux only, else 0)."""
    try:
        rollup = dict(line.split()[:2] for line in open("/proc/self/smaps_rollup").read().splitlines()[1:])
    except OSError:
        return 0.0
    return (int(rollup["Private_Clean:"]) + int(rollup["Private_Dirty:"])) / 1024


def _passivated(cube_id: str | None) -> Unavailable:
    if cube_id is None:
        return Unavailable("the cube this call was made for was passivated", {"retry": True})
    return Unavailable(f"cube {cube_id} was passivated", {"retry": True})


@overload
def _open(  # type: ignore[overload-overlap]
    method: Callable[Concatenate[CubeHost, P], Awaitable[R]],
) -> Callable[Concatenate[CubeHost, int, P], Awaitable[R]]: ...
@overload
def _open(method: Callable[Concatenate[CubeHost, P], R]) -> Callable[Concatenate[CubeHost, int, P], Awaitable[R]]: ...
def _open(method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Calls take the lease of the life they were made for, first; a call that arrives after passivation, or
    for another life of this actor, fails with Unavailable: the caller reactivates and retries. The wrapper
    is a coroutine (this is an asyncio actor). A method changes the cube's state without awaiting; only what
    follows a durable change (its cascade) awaits."""

    @functools.wraps(method)
    async def wrapper(self: CubeHost, lease: int, *args: Any, **kwargs: Any) -> Any:
        self._check(lease)
        self._retry_later()  # a no-op unless an earlier life left cascades to finish
        result = method(self, *args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    # what Ray checks a call's arguments against: the method's own, with the lease first (Ray follows
    # ``__wrapped__`` to the method, so it is not kept)
    sig = inspect.signature(method)
    self_param, *params = sig.parameters.values()
    lease = inspect.Parameter("lease", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int)
    wrapper.__signature__ = sig.replace(parameters=[self_param, lease, *params])  # type: ignore[attr-defined]
    del wrapper.__wrapped__  # type: ignore[attr-defined]
    return wrapper


class CubeHost:
    """Hosts one :class:`MemCube` at a time in its own process (the actor is :data:`CubeActor`)."""

    def __init__(self, config: MemosConfig) -> None:
        self.config = config
        self.cascade = Cascade(config.namespace)
        # looked up by name, not passed in: unpickling a handle imports its class's module (pymilvus, ~40 MiB)
        self._storage = NamedActors(config.namespace)
        self.lease: int | None = None  # the life being served; None: a spare
        self.lives = 0
        self._cube: MemCube | None = None
        self._outbox: CascadeOutbox | None = None
        self._words: WordNeighbours | None = None
        self._reset()

    def _reset(self) -> None:
        self.closed = True
        self._changed: asyncio.Event | None = None
        self._retrying: asyncio.Task[None] | None = None
        self._writes = 0  # changes in flight (durable, their cascade still running): passivation waits
        self._quiet = asyncio.Event()

    @property
    def cube(self) -> MemCube:
        if self._cube is None:
            raise _passivated(None)
        return self._cube

    @property
    def outbox(self) -> CascadeOutbox:
        if self._outbox is None:
            raise _passivated(None)
        return self._outbox

    def _check(self, lease: int) -> None:
        if self.closed or lease != self.lease:
            raise _passivated(self._cube.meta.id if self._cube is not None else None)

    def ready(self) -> int:
        """Started (a spare): how many cubes it hosted so far."""
        return self.lives

    async def open(self, lease: int, meta: CubeMeta) -> CubeMeta:
        """Host ``meta``'s cube for the life ``lease``: its checkpoint, then the rows its storage actor holds
        after it. A crashed earlier life may have left cascades in its outbox: they are retried."""
        if self._cube is not None:
            raise Unavailable(f"cube actor still hosts cube {self._cube.meta.id}", {"retry": True})
        rows = ShardRows(self._storage.get(storage_name(self.config, meta.id)), meta.id)
        cfg = self.config
        words = await self._word_table()
        # What the cube loads lives as long as this life: out of the cycle collector's reach until passivation
        # (frozen before the collector is on again, or its first allocations scan ~10^6 objects: ~300 ms at 10k).
        gc.disable()
        try:
            self._cube = MemCube(
                meta, cfg.storage, cfg.search, cfg.embedder.dim, cfg.scheduler.lifecycle, rows, words=words
            )
            gc.freeze()
        finally:
            gc.enable()
        _trim()  # what loading it left free (its checkpoint's text, the call's buffers) goes back
        self._outbox = _outbox_of(rows, cfg.storage.data_dir, meta.id)
        self._reset()
        self.closed = False
        self.lease = lease
        self.lives += 1
        self._retry_later()
        return self._cube.live_meta()

    async def _word_table(self) -> WordNeighbours | None:
        """The Embedder's word-neighbour table, fetched once per process from the object store (zero-copy:
        the cube actors of a node share its pages); a call made while the Embedder still starts waits for it.
        None where expansion is off, or where this namespace runs no Embedder (a cube driven by a tool)."""
        if self._words is None and self.config.search.expansion_weight > 0:
            embedder = self._storage.get(EMBEDDER_NAME)
            if embedder is None:
                log.warning("no embedder in namespace %s: searches run without query expansion", self.config.namespace)
                return None
            (ref,) = await call(embedder, Embedder.word_neighbours)
            self._words = await ref
        return self._words

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

    @_open
    @read_only
    async def wait_changes(self, after_seq: int | None, timeout_s: float, limit: int = 1_000) -> ChangeBatch:
        """Changes after ``after_seq`` (None: from now on), waiting up to ``timeout_s`` for the first."""
        life = self.lease
        deadline = time.monotonic() + timeout_s
        after = self.cube.seq if after_seq is None else after_seq
        while True:
            if life is None:
                raise _passivated(None)
            self._check(life)  # passivated while we waited
            events = self.cube.changes_after(after, limit)
            left = deadline - time.monotonic()
            if events or left <= 0:
                return ChangeBatch(events=events, seq=events[-1].seq if events else max(after, self.cube.seq))
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    @_open
    @read_only
    def meta(self) -> CubeMeta:
        return self.cube.live_meta()

    @_open
    async def add(
        self,
        items: list[MemoryCreate],
        vecs: np.ndarray,
        author: str,
        redactions: list[dict[str, int]] | None = None,
        ids: list[str] | None = None,
    ) -> Added:
        """New memories, and what they supersede (its caches and adapters are reached by the cascade)."""
        superseded = sorted({m for item in items for m in item.supersedes})
        if not superseded:
            with self._changing():  # nothing was built from a new memory yet: no cascade
                return self.cube.add(items, vecs, author, redactions, ids)
        async with self._change(superseded, "edited"):
            added = self.cube.add(items, vecs, author, redactions, ids)
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
    def all_versions(self) -> builtins.list[MemoryItem]:
        """Every version of every memory, deleted and archived ones too: what a bundle exports."""
        return self.cube.all_versions()

    @_open
    @read_only
    def held(self, memory_ids: builtins.list[str]) -> builtins.list[str]:
        """Which of these memories the cube holds: an import checks before it spends the embeddings."""
        return self.cube.held(memory_ids)

    @_open
    def import_versions(
        self, items: builtins.list[MemoryItem], memory_ids: builtins.list[str], vecs: np.ndarray
    ) -> int:
        """Whole version histories under their own ids (a bundle's import, see MemCube.import_versions); nothing
        was built from them here yet: no cascade."""
        with self._changing():
            return self.cube.import_versions(items, memory_ids, vecs)

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
    async def passivate(self) -> Released:
        """Refuse new calls, let the changes in flight finish their cascades (bounded: what is left stays in
        the outbox, and the Directory starts the cube again for it), flush, release the storage file and
        report final counters, and empty the actor; with the MiB it still holds, the Directory keeps it as a
        spare or ends it (a big cube leaves a heap that a small one would not need). So a call that did not
        finish was refused, and a caller may retry it."""
        self.closed = True
        self._wake()
        if self._writes:
            self._quiet.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), CASCADE_TIMEOUT_S)
        cube = self.cube
        meta = cube.live_meta()
        pending = bool(self.outbox.items)
        if self._retrying is not None:  # what is left stays in the outbox for the next life
            self._retrying.cancel()
        self._cube, self.lease = None, None  # emptied first: a failed close leaves nothing of it here
        try:
            cube.close()
        finally:
            del cube
            gc.unfreeze()  # the cycles its life left can be collected again
            footprint = _release_memory(self.config.directory.spare_max_mib)
        return Released(meta=meta, footprint_mib=footprint, lives=self.lives, cascades_pending=pending)


CubeActor = actor_class(CubeHost, max_restarts=0, max_task_retries=0, max_concurrency=1000)
"""Started by the Directory as spares, each hosting one cube after another; a crashed one is replaced."""
