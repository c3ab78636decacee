"""The Scheduler: which model worker runs a chat, where every KV cache lives, and which workers
hold which LoRA adapters (a chat under an adapter prefers a worker that has it loaded; any other
loads it from the object store in the chat call).

For a chat with activation memory it picks a worker that already holds the prefix's cache;
when that worker is busy and another is idle, or when the caller pins a worker, it moves the
cache there through the Ray object store instead of computing it again. A cache nobody holds
yet is built once (concurrent requests for the same prefix share one build); one that was
evicted or whose worker restarted is loaded from disk. Editing or deleting a memory that a
cache was built from invalidates the cache everywhere.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import ray
from ray.actor import ActorHandle

from actors.calls import actor_class, call
from actors.handoff import AdapterWeights, KVHandle, Placement
from actors.worker import ModelWorker, WorkerActor, worker_name
from memos_ray.activation import kvcache
from memos_ray.config import MemosConfig
from memos_ray.errors import InvalidInput
from memos_ray.types import ChatPlan, KVCacheEntry, KVInfo, ModelIdentity

SCHEDULER_NAME = "memos_scheduler"
REFS_KEPT = 64  # ObjectRefs of recent caches kept for moves (a held reference pins the cache in the store)


class Scheduler:
    def __init__(self, config: MemosConfig) -> None:
        self.config = config
        cfg = config.workers
        self.workers: list[ActorHandle] = [
            WorkerActor.options(  # type: ignore[attr-defined]
                name=worker_name(i),
                namespace=config.namespace,
                num_cpus=cfg.num_cpus,
                resources=cfg.resources[i] if i < len(cfg.resources) else None,
            ).remote(i, config)
            for i in range(cfg.count)
        ]
        self.identity: ModelIdentity | None = None
        self.where: dict[str, set[int]] = {}
        self.entries: dict[str, KVCacheEntry] = {}
        self.inflight = [0] * cfg.count
        self._builds: dict[str, asyncio.Task[KVCacheEntry]] = {}
        # ObjectRefs of recent caches: a move is then one call (the receiver maps the buffer). Bounded,
        # because a held reference keeps the cache in the object store after workers evict it.
        self.refs: OrderedDict[str, ray.ObjectRef] = OrderedDict()
        self.adapter_where: dict[str, set[int]] = {}  # adapter id -> workers that reported it loaded
        self.moves = self.moved_bytes = self.builds = self.invalidated = 0

    async def ready(self) -> ModelIdentity:
        identities = await asyncio.gather(*(call(w, ModelWorker.identity) for w in self.workers))
        if len({i.key for i in identities}) != 1:
            raise RuntimeError(f"workers disagree on the model: {identities}")
        self.identity = identities[0]
        return self.identity

    async def _identity(self) -> ModelIdentity:
        return self.identity or await self.ready()

    # ------------------------------------------------------------ placement

    def _least_busy(self, among: list[int], plan: ChatPlan | None = None) -> int:
        """Least in-flight chats first; among equals, one that already holds the plan's adapter."""
        holders = self.adapter_where.get(plan.adapter.adapter_id, set()) if plan and plan.adapter else set()
        return min(among, key=lambda i: (self.inflight[i], i not in holders, i))

    def _placement(self, w: int, key: str | None, **kwargs: Any) -> Placement:
        return Placement(worker=w, handle=self.workers[w], key=key, **kwargs)

    async def place(
        self, plan: ChatPlan, pinned: int | None = None, adapter: AdapterWeights | None = None
    ) -> Placement:
        """Choose a worker and make sure it holds the cache (move or build); the caller then runs the chat
        on ``placement.handle`` and reports its end with :meth:`release`."""
        if pinned is not None and not 0 <= pinned < len(self.workers):
            raise InvalidInput(f"worker {pinned} does not exist (0..{len(self.workers) - 1})", {"worker": pinned})
        everyone = list(range(len(self.workers)))
        if not plan.use_kv:
            w = pinned if pinned is not None else self._least_busy(everyone, plan)
            self.inflight[w] += 1
            return self._placement(w, None)
        adapter_id = plan.adapter.adapter_id if plan.adapter else None
        key, _ = kvcache.cache_key(await self._identity(), adapter_id, plan.prefix_text)
        holders = sorted(self.where.get(key, ()))
        if pinned is not None:
            w = pinned
        elif holders:
            w = self._least_busy(holders)
            idle = [i for i in everyone if self.inflight[i] == 0]
            if self.inflight[w] > 0 and idle:  # busy holder, idle worker: move rather than queue
                w = idle[0]
        else:
            w = self._least_busy(everyone, plan)
        self.inflight[w] += 1
        try:
            if w in holders:
                return self._placement(w, key)
            if holders:
                return await self._move(key, self._least_busy(holders), w)
            built = False
            if key not in self.entries:  # nobody has it, not even on disk: build it once
                task = self._builds.get(key)
                if task is None:
                    task = asyncio.get_running_loop().create_task(self._build(key, w, plan, adapter))
                    self._builds[key] = task
                    built = True
                entry = await asyncio.shield(task)
                if w not in self.where.get(key, ()):  # another worker built it meanwhile: move it here
                    return await self._move(entry.key, self._least_busy(sorted(self.where[key])), w)
            return self._placement(w, key, built=built)
        except BaseException:
            self.inflight[w] -= 1
            raise

    async def _build(self, key: str, w: int, plan: ChatPlan, adapter: AdapterWeights | None) -> KVCacheEntry:
        try:
            kv = await call(self.workers[w], ModelWorker.build, plan, adapter)
            if plan.adapter:
                self.adapter_where.setdefault(plan.adapter.adapter_id, set()).add(w)
            self._keep_ref(key, kv.ref)
            self.entries[key] = kv.entry
            self.where.setdefault(key, set()).add(w)
            self.builds += 1
            return kv.entry
        finally:
            self._builds.pop(key, None)

    def _keep_ref(self, key: str, ref: ray.ObjectRef) -> None:
        self.refs[key] = ref
        self.refs.move_to_end(key)
        while len(self.refs) > REFS_KEPT:
            self.refs.popitem(last=False)

    async def _move(self, key: str, src: int, dst: int) -> Placement:
        """Hand ``dst`` the cache's ObjectRef with its chat (asking the holder for it when not kept)."""
        ref = self.refs.get(key)
        if ref is None:
            try:
                ref = (await call(self.workers[src], ModelWorker.export, key)).ref  # a reference: the bytes stay
            except ray.exceptions.RayError:  # the holder lost it: dst loads it from disk or builds it
                self.where.get(key, set()).discard(src)
                return self._placement(dst, key)
            self._keep_ref(key, ref)
        return self._placement(dst, key, adopt=KVHandle(self.entries[key], ref))

    def release(self, worker: int, kv: KVInfo | None, adapter: str | None) -> None:
        """A chat placed on ``worker`` ended (``kv`` None: it failed): free its slot, note where caches and
        adapters now are. Sent fire-and-forget: it is bookkeeping, not on the request's path."""
        self.inflight[worker] = max(0, self.inflight[worker] - 1)
        if adapter is not None:
            self.adapter_where.setdefault(adapter, set()).add(worker)
        if kv is not None and kv.key is not None:
            if kv.key in self.entries:  # not invalidated while this chat ran
                self.where.setdefault(kv.key, set()).add(worker)
            if kv.status == "moved":
                self.moves += 1
                self.moved_bytes += kv.moved_bytes

    # ------------------------------------------------------------ invalidation

    def _forget(self, keys: list[str]) -> None:
        for key in keys:
            self.entries.pop(key, None)
            self.where.pop(key, None)
            self.refs.pop(key, None)

    async def invalidate(self, memory_ids: list[str]) -> int:
        """Drop every cache built from any of these memories: it is stale and never used again."""
        ids = set(memory_ids)
        stale = [k for k, e in self.entries.items() if any(s.memory_id in ids for s in e.sources)]
        self._forget(stale)  # first: no placement may pick them while the workers drop them
        if stale:  # a dead worker has nothing to drop: its restart starts empty
            await asyncio.gather(*(call(w, ModelWorker.drop, stale) for w in self.workers), return_exceptions=True)
        # again: a chat that ran on one of them while we waited may have reported it held (release)
        self._forget(stale)
        self.invalidated += len(stale)
        return len(stale)

    async def drop_adapters(self, adapter_ids: list[str]) -> int:
        """An adapter was deleted (or its cube): off every worker, with the KV caches computed under it."""
        ids = set(adapter_ids)
        self._forget([k for k, e in self.entries.items() if e.adapter in ids])
        for adapter_id in ids:
            self.adapter_where.pop(adapter_id, None)
        dropped = await asyncio.gather(
            *(call(w, ModelWorker.drop_adapters, list(ids)) for w in self.workers), return_exceptions=True
        )
        return sum(d for d in dropped if isinstance(d, int))

    async def stats(self) -> dict[str, Any]:
        workers = await asyncio.gather(*(call(w, ModelWorker.stats) for w in self.workers))
        return {
            "workers": workers,
            "caches": len(self.entries),
            "builds": self.builds,
            "moves": self.moves,
            "moved_bytes": self.moved_bytes,
            "invalidated": self.invalidated,
            "inflight": list(self.inflight),
        }


SchedulerActor = actor_class(Scheduler, max_restarts=-1, max_concurrency=256)
