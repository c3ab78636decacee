"""The Scheduler: which model worker runs a chat, where every KV cache lives, and which workers
hold which LoRA adapters (a chat under an adapter prefers a worker that has it loaded; any other
loads it from the object store in the chat call).

For a chat with activation memory it picks a worker that already holds the prefix's cache;
when that worker is busy and another is idle, or when the caller pins a worker, it moves the
cache there through the Ray object store instead of computing it again. A cache nobody holds
yet is built once (concurrent requests for the same prefix share one build); one that was
evicted or whose worker restarted is loaded from disk. Editing or deleting a memory that a
cache was built from invalidates the cache everywhere.

It is the mechanism; the MemScheduler (``actors/memscheduler.py``) is the policy: it asks for caches to
be built ahead of need (:meth:`Scheduler.prebuild`), demoted off the workers (:meth:`Scheduler.demote`)
or off the disk (:meth:`Scheduler.evict_disk`), and reads :meth:`Scheduler.places`. The Scheduler
refuses to move a cache that a placed chat is still using.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import ray
from ray.actor import ActorHandle

from actors.calls import actor_class, call
from actors.handoff import AdapterWeights, KVHandle, Placement
from actors.vllm_worker import VLLMWorkerActor
from actors.worker import ModelWorker, WorkerActor, worker_name
from memos_ray.activation import kvcache
from memos_ray.config import MemosConfig
from memos_ray.errors import InvalidInput, Unavailable
from memos_ray.types import (
    CachePlace,
    ChatPlan,
    KVCacheEntry,
    KVInfo,
    KVPlaces,
    ModelIdentity,
    Warmed,
    WorkerKV,
)

SCHEDULER_NAME = "memos_scheduler"
REFS_KEPT = 64  # ObjectRefs of recent caches kept for moves (a held reference pins the cache in the store)
NODES_FRESH_S = 1.0  # how old Ray's node table may be when a placement asks whether a worker's node is up
PROBE_S = 2.0  # how often a lost worker is asked whether it is back (a restart on another node, or its own)


def _offered(resources: dict[str, float]) -> bool:
    """Whether a live node offers ``resources`` (in its totals): an actor that needs them can be placed."""
    if not resources:
        return True
    return any(
        node["Alive"] and all(node["Resources"].get(k, 0.0) >= v for k, v in resources.items()) for node in ray.nodes()
    )


def worker_placeable(config: MemosConfig, w: int) -> bool:
    """Whether a live node offers what model worker ``w`` is pinned to (``workers.resources``)."""
    wanted = config.workers.resources
    return _offered(wanted[w] if w < len(wanted) else {})


class Scheduler:
    def __init__(self, config: MemosConfig) -> None:
        self.config = config
        cfg = config.workers
        # Detached, found again by name: a Scheduler restarted (its node lost) keeps the workers that live on,
        # with their caches and adapters, rather than reloading the model on each while it serves again.
        actor = VLLMWorkerActor if cfg.backend == "vllm" else WorkerActor  # the same calls (actors/vllm_worker.py)
        self.workers: list[ActorHandle] = [
            actor.options(
                name=worker_name(i),
                namespace=config.namespace,
                lifetime="detached",
                get_if_exists=True,
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
        self.block_holders: dict[str, set[int]] = {}  # memory id -> workers a composed chat of it was placed on
        self.moves = self.moved_bytes = self.builds = self.invalidated = 0
        self.last_used: dict[str, float] = {}  # key -> when a chat last used it (a build ahead of need is no use)
        self.using: dict[str, int] = {}  # key -> chats placed on it that have not ended
        self.cubes_of: dict[str, list[str]] = {}
        self.built_for: dict[str, str] = {}  # key -> "chat" or "policy"
        self.disk: dict[str, int] = {}  # key -> bytes of its file
        self.build_s: dict[str, float] = {}  # key -> what its last build or load took the worker
        self.break_even: int | None = None
        self.calibration: list[dict[str, float]] = []
        self._calibrating: asyncio.Task[int] | None = None
        self.lost: set[int] = set()  # workers whose actor died (its node went?): no placement until they answer
        self._probes: dict[int, asyncio.Task[None]] = {}
        self._nodes_read_at = float("-inf")

    async def ready(self) -> ModelIdentity:
        """The model the workers serve, once those that can be placed have loaded it. A worker whose pinned
        resources no live node offers (its node was lost before this Scheduler's restart: Ray would queue it
        forever) is marked lost, and probed, rather than waited for."""
        if self.identity is not None:
            return self.identity
        self._lose_unplaceable(0.0)
        placeable = self._up()  # none: Unavailable
        identities = await asyncio.gather(*(call(self.workers[i], ModelWorker.identity) for i in placeable))
        if len({i.key for i in identities}) != 1:
            raise RuntimeError(f"workers disagree on the model: {identities}")
        self.identity = identities[0]
        self._scan_disk()
        return self.identity

    def _scan_disk(self) -> None:
        """Caches on disk from earlier lives (this node's folder): known again, with their file's age as
        their last use, so the policy can demote them and placement loads rather than builds them."""
        assert self.identity is not None
        folder = self.config.storage.data_dir / "kv"
        for path in folder.glob("*.safetensors") if folder.exists() else ():
            with contextlib.suppress(Exception):  # a torn or foreign file: the worker's own put replaces it
                entry = kvcache.read_entry(path)
                if entry.model.key == self.identity.key:
                    self.entries[entry.key] = entry
                    self.disk[entry.key] = path.stat().st_size
                    self.last_used[entry.key] = path.stat().st_mtime

    async def calibrated(self) -> int:
        """The prefix length from which a cache pays off, measured once on worker 0. Callers that ask while
        it is measured wait for that measurement: a second one would queue behind it on the worker and burn
        a core for ~20 s more (it did, under the first ingest after start)."""
        if self.break_even is not None:
            return self.break_even
        if self._calibrating is None or self._calibrating.done():  # none yet, or the last one failed
            self._calibrating = asyncio.get_running_loop().create_task(self._calibrate())
        return await asyncio.shield(self._calibrating)

    async def _calibrate(self) -> int:
        await self._identity()  # which workers can be placed at all
        break_even, self.calibration = await call(self.workers[self._up()[0]], ModelWorker.calibrate)
        self.break_even = break_even
        return break_even

    async def _identity(self) -> ModelIdentity:
        return self.identity or await self.ready()

    # ------------------------------------------------------------ workers lost and back

    def _live(self) -> list[ActorHandle]:
        """The workers not lost: a call on a lost one waits until Ray places it again (maybe never)."""
        return [w for i, w in enumerate(self.workers) if i not in self.lost]

    def _up(self) -> list[int]:
        up = [i for i in range(len(self.workers)) if i not in self.lost]
        if not up:
            raise Unavailable("no model worker is up (their nodes were lost?): retry", {"retry": True})
        return up

    def _lose_unplaceable(self, fresh_s: float = NODES_FRESH_S) -> None:
        """A worker pinned to resources no live node offers (its node lost) is lost now: a call on it would
        wait until Ray places it again, maybe never. Ray's node table is read at most every ``fresh_s``."""
        now = time.monotonic()
        if now - self._nodes_read_at < fresh_s:
            return
        self._nodes_read_at = now
        for i in range(len(self.workers)):
            if i not in self.lost and not worker_placeable(self.config, i):
                self.worker_lost(i)

    def worker_lost(self, w: int) -> None:
        """A call on worker ``w`` found its actor dead: nothing is placed there until it answers again (Ray
        restarts it, on a node that offers its resources, when one does); what it held is forgotten."""
        if w in self.lost or not 0 <= w < len(self.workers):
            return
        self.lost.add(w)
        self.inflight[w] = 0
        for places in (*self.where.values(), *self.adapter_where.values()):
            places.discard(w)
        self._probes[w] = asyncio.get_running_loop().create_task(self._probe(w))

    async def _probe(self, w: int) -> None:
        while True:
            with contextlib.suppress(Exception):  # still restarting, or no node for it yet
                await asyncio.wait_for(call(self.workers[w], ModelWorker.identity), timeout=PROBE_S)
                self.lost.discard(w)
                self._probes.pop(w, None)
                return
            await asyncio.sleep(PROBE_S)

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
        identity = await self._identity()  # first: a worker no node can place is lost, never picked
        self._lose_unplaceable()  # its node lost since
        if pinned in self.lost:
            raise Unavailable(f"model worker {pinned} is down (its node was lost?): retry", {"worker": pinned})
        everyone = self._up()
        if not plan.use_kv or plan.blocks is not None:  # compose: each worker keeps the blocks it built
            w = pinned if pinned is not None else self._least_busy(everyone, plan)
            self.inflight[w] += 1
            composed = plan.blocks if plan.use_kv and plan.blocks else []
            for block in composed:  # where the cascade must reach them
                self.block_holders.setdefault(block.ref.memory_id, set()).add(w)
            return self._placement(w, None)
        adapter_id = plan.adapter.adapter_id if plan.adapter else None
        key, _ = kvcache.cache_key(identity, adapter_id, plan.prefix_text)
        holders = sorted(self.where.get(key, set()) - self.lost)
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
        self._use(key, plan)
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
            self._done(key)
            raise

    def _use(self, key: str, plan: ChatPlan) -> None:
        self.using[key] = self.using.get(key, 0) + 1
        self.last_used[key] = time.time()
        self.cubes_of.setdefault(key, list(plan.cube_ids))
        self.built_for.setdefault(key, "chat")

    def _done(self, key: str | None) -> None:
        if key is not None and key in self.using:
            self.using[key] -= 1
            if self.using[key] <= 0:
                del self.using[key]
            self.last_used[key] = time.time()

    async def _build(self, key: str, w: int, plan: ChatPlan, adapter: AdapterWeights | None) -> KVCacheEntry:
        try:
            kv = await call(self.workers[w], ModelWorker.build, plan, adapter)
            if plan.adapter:
                self.adapter_where.setdefault(plan.adapter.adapter_id, set()).add(w)
            self._keep_ref(key, kv.ref)
            self.entries[key] = kv.entry
            self.where.setdefault(key, set()).add(w)
            self.disk[key] = kv.entry.bytes  # every build is written to disk (the file is the tensors' size)
            self.build_s[key] = kv.compute_s
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

    def release(self, worker: int, key: str | None, kv: KVInfo | None, adapter: str | None) -> None:
        """A chat placed on ``worker`` (on cache ``key``) ended (``kv`` None: it failed): free its slot, note
        where caches and adapters now are. Sent fire-and-forget: it is bookkeeping, not on the request's path."""
        self.inflight[worker] = max(0, self.inflight[worker] - 1)
        self._done(key)
        if adapter is not None:
            self.adapter_where.setdefault(adapter, set()).add(worker)
        if kv is not None and kv.key is not None:
            if kv.key in self.entries:  # not invalidated while this chat ran
                self.where.setdefault(kv.key, set()).add(worker)
                self.disk.setdefault(kv.key, self.entries[kv.key].bytes)
            if kv.status == "moved":
                self.moves += 1
                self.moved_bytes += kv.moved_bytes

    # ------------------------------------------------------------ invalidation

    def _forget(self, keys: list[str]) -> None:
        for key in keys:
            for table in (
                self.entries,
                self.where,
                self.refs,
                self.last_used,
                self.cubes_of,
                self.built_for,
                self.disk,
            ):
                table.pop(key, None)  # type: ignore[attr-defined]

    async def invalidate(self, memory_ids: list[str]) -> int:
        """Drop every cache built from any of these memories: it is stale and never used again."""
        ids = set(memory_ids)
        stale = [k for k, e in self.entries.items() if any(s.memory_id in ids for s in e.sources)]
        self._forget(stale)  # first: no placement may pick them while the workers drop them
        holders = sorted(set().union(*(self.block_holders.pop(m, set()) for m in ids)))
        # the workers that composed with these memories (a worker runs one call at a time: no other is asked)
        drops = [call(self.workers[w], ModelWorker.drop_blocks, memory_ids) for w in holders if w not in self.lost]
        if stale:  # a dead worker has nothing to drop: its restart starts empty
            drops += [call(w, ModelWorker.drop, stale) for w in self._live()]
        await asyncio.gather(*drops, return_exceptions=True)
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
            *(call(w, ModelWorker.drop_adapters, list(ids)) for w in self._live()), return_exceptions=True
        )
        return sum(d for d in dropped if isinstance(d, int))

    # ------------------------------------------------------------ the policy's moves

    async def prebuild(self, plan: ChatPlan, adapter: AdapterWeights | None = None) -> Warmed:
        """Make sure some worker holds the cache of ``plan``'s prefix, ahead of any chat: held already, loaded
        from disk, or built (once, shared with chats that need it meanwhile). The worker is the one placement
        would pick, so the next chat on this prefix runs there. A build ahead of need is not a use: it does
        not keep the cache from demotion."""
        cube_id = plan.cube_ids[0] if plan.cube_ids else ""
        adapter_id = plan.adapter.adapter_id if plan.adapter else None
        key, _ = kvcache.cache_key(await self._identity(), adapter_id, plan.prefix_text)
        holders = sorted(self.where.get(key, ()))
        if holders:
            return Warmed(cube_id=cube_id, status="held", key=key, tokens=self.entries[key].tokens, worker=holders[0])
        w = self._least_busy(self._up(), plan)
        status = "loaded" if key in self.entries else "built"
        task = self._builds.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._build(key, w, plan, adapter))
            self._builds[key] = task
        entry = await asyncio.shield(task)
        self.cubes_of.setdefault(key, list(plan.cube_ids))
        self.built_for.setdefault(key, "policy")
        self.last_used.setdefault(key, time.time())
        return Warmed(
            cube_id=cube_id,
            status=status,
            key=key,
            tokens=entry.tokens,
            worker=min(self.where[key]),
            adapter=adapter_id,
            compute_ms=round(self.build_s.pop(key, 0.0) * 1000, 1),
        )

    async def warm_adapter(self, adapter: AdapterWeights) -> int:
        """Load an adapter on the worker a chat under it would be placed on (no prefix to build)."""
        await self._identity()
        holders = self.adapter_where.get(adapter.adapter.adapter_id, set())
        if holders:
            return min(holders)
        w = min(self._up(), key=lambda i: (self.inflight[i], i))
        await call(self.workers[w], ModelWorker.load_adapter, adapter)
        self.adapter_where.setdefault(adapter.adapter.adapter_id, set()).add(w)
        return w

    async def demote(self, key: str) -> list[int]:
        """The cache leaves every worker's memory (its file stays); refused (empty) while a chat uses it."""
        if self.using.get(key) or key in self._builds:
            return []
        holders = sorted(self.where.pop(key, set()))
        self.refs.pop(key, None)  # a held reference would keep it in the object store
        await asyncio.gather(
            *(call(self.workers[w], ModelWorker.demote, [key]) for w in holders), return_exceptions=True
        )
        return holders

    async def evict_disk(self, key: str) -> bool:
        """The cache leaves the disk too (and any worker still holding it); refused while a chat uses it."""
        if self.using.get(key) or key in self._builds:
            return False
        self._forget([key])
        await asyncio.gather(*(call(w, ModelWorker.drop, [key]) for w in self._live()), return_exceptions=True)
        return True

    async def places(self, with_workers: bool = True) -> KVPlaces:
        """Every cache and where it lives; ``with_workers`` also asks each worker for its KV bytes and adapters
        (a call that waits behind the chat it is running: the policy's sweep does without)."""
        stats = await asyncio.gather(*(call(w, ModelWorker.stats) for w in self._live())) if with_workers else []
        caches = [
            CachePlace(
                key=key,
                cube_ids=self.cubes_of.get(key, []),
                tokens=entry.tokens,
                bytes=entry.bytes,
                workers=sorted(self.where.get(key, ())),
                last_used_at=datetime.fromtimestamp(self.last_used[key], UTC) if key in self.last_used else None,
                in_use=self.using.get(key, 0) + (key in self._builds),
                built_for="policy" if self.built_for.get(key) == "policy" else "chat",
            )
            for key, entry in self.entries.items()
        ]
        workers = [
            WorkerKV(
                worker=s["worker"],
                kv_bytes=s["kv_bytes"],
                kv_budget=s["kv_budget"],
                resident=s["resident"],
                adapters=list(s["adapter_ids"]),
            )
            for s in stats
        ]
        return KVPlaces(caches=caches, disk=dict(self.disk), workers=workers, break_even_tokens=await self.calibrated())

    async def stats(self) -> dict[str, Any]:
        workers = await asyncio.gather(*(call(w, ModelWorker.stats) for w in self._live()))
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
