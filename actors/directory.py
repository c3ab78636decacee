"""The Directory: which cubes exist, and which of them have a live actor.

It owns the catalog (cube metadata, with each cube's owner and grants, so it is where access
is decided: ``activate`` and the catalog calls take the caller and the role the action needs),
starts the storage actors (one per shard) and keeps at most ``max_live_cubes`` cubes live.
``activate`` finds or opens a cube's actor (concurrent activations of one cube share one
start): a spare cube actor, already started with the code imported, opens the cube from its
checkpoint, and another spare is started in the background when too few are left (from start, the
pool is filled to ``warm_actors`` in the background, so a new live set waits for no process). When the cap
is reached the least used cube is passivated in the background: it flushes, checkpoints, its
counters go to the catalog, and its actor goes back to the spares (or ends, after
``actor_lives`` cubes). The next ``activate`` opens it again from durable state, so callers
never see the difference; a lease per life keeps a late call from reaching the next cube.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import statistics
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import ray
from ray.actor import ActorHandle

from actors import metrics
from actors.calls import ON_HEAD, actor_class, call
from actors.cascade import Cascade
from actors.cube import CubeActor, CubeHost
from actors.rows import storage_actor_name
from actors.storage import StorageActor, StorageHost
from memos_ray.config import MemosConfig
from memos_ray.errors import CubeExists, CubeNotFound, InvalidInput, MemosError, NotFound, Unavailable
from memos_ray.governance.access import can, require
from memos_ray.governance.identity import ADMIN, LEGACY_OWNER
from memos_ray.plaintext.catalog import CatalogStore
from memos_ray.plaintext.outbox import legacy_cubes, remove_legacy
from memos_ray.plaintext.rows import shard_of
from memos_ray.types import Caller, CubeCreate, CubeList, CubeMeta, CubeUpdate, DirectoryStats, Grant, Role, utcnow

DIRECTORY_NAME = "memos_directory"
BIG_CUBE = 2_000  # memories from which a cube prefers the spare with the largest heap
RESUME_AFTER_S = 5.0  # a cube passivated with cascades still pending is started again this much later


@dataclass(frozen=True)
class Activation:
    """A live cube's actor, the lease of its life (every call passes it) and the caller's role on it: what
    every cube call starts from."""

    cube_id: str
    handle: ActorHandle
    role: Role
    lease: int


log = logging.getLogger(__name__)


def _new_cube_id() -> str:
    return f"cube-{secrets.token_hex(6)}"


class Directory:
    def __init__(self, config: MemosConfig) -> None:
        self.config = config
        self.catalog = CatalogStore(config.storage)
        self.cubes: dict[str, CubeMeta] = self.catalog.load()
        for meta in list(self.cubes.values()):
            if meta.owner == LEGACY_OWNER:  # cubes made before identities existed belong to the administrator
                self.cubes[meta.id] = meta.model_copy(update={"owner": ADMIN})
                self.catalog.put(self.cubes[meta.id])
        self.live: OrderedDict[str, ActorHandle] = OrderedDict()
        self._leases: dict[str, int] = {}  # live cube -> the lease of its actor's current life
        self._spares: list[tuple[ActorHandle, float]] = []  # cube actors with nothing loaded, and their MiB
        self._spawning = 0
        self._warming: asyncio.Task[None] | None = None
        self.storage = [
            StorageActor.options(  # type: ignore[attr-defined]
                name=storage_actor_name(k),
                namespace=config.namespace,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0.01,
                resources=ON_HEAD if config.storage.is_lite else {},  # a lite shard is a file on the head
            ).remote(config, k)
            for k in range(config.storage.shards)
        ]
        self._starting: dict[str, asyncio.Task[tuple[ActorHandle, int]]] = {}
        self._retiring: dict[str, asyncio.Task[None]] = {}
        self._retired: OrderedDict[str, None] = OrderedDict()  # actor ids passivated cleanly
        self._deleting: set[str] = set()
        self._admitted = 0  # slots taken by actors still starting
        self._heat: dict[str, tuple[float, float]] = {}  # cube -> (decayed use count, when)
        self._live_since: dict[str, float] = {}
        self._room = asyncio.Lock()
        self._activations = 0
        self._passivations = 0
        self._activation_s: deque[float] = deque(maxlen=1000)
        self.cascade = Cascade(config.namespace)
        self._resuming: asyncio.Task[None] | None = None

    async def ready(self) -> int:
        await asyncio.gather(*(call(s, StorageHost.ready) for s in self.storage))
        self._refill()
        self._resume_cascades()
        return len(self.cubes)

    def _storage_of(self, cube_id: str) -> ActorHandle:
        return self.storage[shard_of(cube_id, self.config.storage.shards)]

    # ------------------------------------------------------------ cascades left pending

    def _resume_cascades(self, delay_s: float = 0.0) -> None:
        """Start the cubes whose cascade outbox is not empty (left by a crash, or by a passivation while a
        cascade could not be done): a started cube's actor retries them until they are done."""
        if self._resuming is None or self._resuming.done():
            self._resuming = asyncio.get_running_loop().create_task(self._resume(delay_s))

    async def _resume(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            shards = await asyncio.gather(*(call(s, StorageHost.pending_cascades) for s in self.storage))
        except Exception as exc:  # tried again at the next start or passivation
            log.warning("could not list the cubes with cascades to finish: %s", exc)
            return
        pending = {c for cubes in shards for c in cubes} | set(legacy_cubes(self.config.storage.data_dir))
        for cube_id in sorted(pending):
            if cube_id in self.cubes and cube_id not in self.live:
                try:
                    await self.activate(cube_id)
                except Exception as exc:  # it is tried again at the next start or passivation
                    log.warning("could not start cube %s to finish its cascades: %s", cube_id, exc)

    # ------------------------------------------------------------ catalog

    async def create_cube(self, req: CubeCreate, caller: Caller) -> CubeMeta:
        """A new cube owned by the caller."""
        cube_id = req.id or _new_cube_id()
        if cube_id in self.cubes:
            raise CubeExists(f"cube {cube_id} already exists", {"cube_id": cube_id})
        now = utcnow()
        meta = CubeMeta(
            id=cube_id,
            name=req.name,
            description=req.description,
            owner=caller.principal,
            quotas=req.quotas,
            lifecycle=req.lifecycle,
            created_at=now,
            updated_at=now,
        )
        self.catalog.put(meta)  # durable before it is visible
        self.cubes[cube_id] = meta
        return meta

    def _known(self, cube_id: str) -> CubeMeta:
        meta = self.cubes.get(cube_id)
        if meta is None or cube_id in self._deleting:
            raise CubeNotFound(f"cube {cube_id} not found", {"cube_id": cube_id})
        return meta

    def _counters(self, cube_id: str, live: CubeMeta) -> CubeMeta:
        """Take a cube actor's counters; owner, grants and quotas are the Directory's own."""
        meta = self.cubes[cube_id].model_copy(
            update={"seq": live.seq, "memory_count": live.memory_count, "text_bytes": live.text_bytes}
        )
        self.cubes[cube_id] = meta
        return meta

    def authorize(self, cube_id: str, caller: Caller, need: Role) -> CubeMeta:
        """The cube's metadata if ``caller`` holds ``need`` on it; else CubeNotFound (no role) or Forbidden."""
        meta = self._known(cube_id)
        require(meta, caller, need)
        return meta

    def authorize_many(self, cube_ids: list[str], caller: Caller, need: Role) -> None:
        """All or nothing: the first cube ``caller`` may not use raises."""
        for cube_id in cube_ids:
            self.authorize(cube_id, caller, need)

    async def get_cube(self, cube_id: str, caller: Caller) -> CubeMeta:
        self.authorize(cube_id, caller, Role.read)
        handle = self.live.get(cube_id)
        if handle is not None:
            # A cube being passivated refuses the call; then the catalog's copy is current enough.
            with contextlib.suppress(MemosError, ray.exceptions.RayActorError):
                return self._counters(cube_id, await call(handle, CubeHost.meta, self._leases[cube_id]))
        return self.cubes[cube_id]

    def readable(self, caller: Caller) -> list[str]:
        """The cubes ``caller`` may read, most recently changed first."""
        ids = [c for c, meta in self.cubes.items() if c not in self._deleting and can(meta, caller, Role.read)]
        return sorted(ids, key=lambda c: (self.cubes[c].updated_at, self.cubes[c].seq), reverse=True)

    async def list_cubes(self, caller: Caller, offset: int = 0, limit: int = 100) -> CubeList:
        ids = sorted(self.readable(caller), key=lambda c: (self.cubes[c].created_at, c))
        page = ids[offset : offset + limit]
        metas = await asyncio.gather(*(self.get_cube(c, caller) for c in page))
        return CubeList(cubes=list(metas), total=len(ids))

    async def _save(self, meta: CubeMeta) -> CubeMeta:
        """Durable, then visible, then pushed to the live actor (which enforces quotas)."""
        meta = meta.model_copy(update={"updated_at": utcnow()})
        self.catalog.put(meta)
        self.cubes[meta.id] = meta
        handle = self.live.get(meta.id)
        if handle is not None:
            with contextlib.suppress(MemosError, ray.exceptions.RayActorError):  # passivating: reads the catalog
                await call(handle, CubeHost.set_meta, self._leases[meta.id], meta)
        return meta

    async def update_cube(self, cube_id: str, req: CubeUpdate, caller: Caller) -> CubeMeta:
        meta = self.authorize(cube_id, caller, Role.admin)
        changes = req.model_dump(exclude_none=True)
        if changes.get("kv_mode") == "default":  # back to the server's llm.kv_mode
            changes["kv_mode"] = None
        return await self._save(CubeMeta.model_validate({**meta.model_dump(), **changes}))

    async def share(self, cube_id: str, grant: Grant, caller: Caller) -> CubeMeta:
        """Grant ``grant.role`` to a principal (replacing its earlier grant on this cube)."""
        meta = self.authorize(cube_id, caller, Role.admin)
        if grant.principal == meta.owner:
            raise InvalidInput(f"{grant.principal} owns cube {cube_id}", {"principal": grant.principal})
        grants = [g for g in meta.grants if g.principal != grant.principal] + [grant]
        return await self._save(meta.model_copy(update={"grants": grants}))

    async def unshare(self, cube_id: str, principal: str, caller: Caller) -> CubeMeta:
        meta = self.authorize(cube_id, caller, Role.admin)
        if not any(g.principal == principal for g in meta.grants):
            raise NotFound(
                f"{principal} holds no grant on cube {cube_id}", {"cube_id": cube_id, "principal": principal}
            )
        return await self._save(
            meta.model_copy(update={"grants": [g for g in meta.grants if g.principal != principal]})
        )

    async def delete_cube(self, cube_id: str, caller: Caller) -> None:
        """Remove a cube and all its memories, everywhere. From the first moment it is not found."""
        self.authorize(cube_id, caller, Role.admin)
        # its adapters first (from disk and every worker): if that fails, nothing is deleted yet and the
        # caller's retry runs it again; the other way round, a failure would leave them behind for good
        await self.cascade.cube_deleted(cube_id)
        self._deleting.add(cube_id)
        try:
            starting = self._starting.get(cube_id)
            if starting is not None:
                await asyncio.gather(starting, return_exceptions=True)
            handle = self.live.pop(cube_id, None)
            if handle is not None:
                await self._retire(cube_id, handle)
            retiring = self._retiring.get(cube_id)
            if retiring is not None:
                await retiring
            await call(self._storage_of(cube_id), StorageHost.destroy, cube_id)
            await asyncio.to_thread(self._destroy_files, cube_id)
            self.catalog.delete(cube_id)
            self.cubes.pop(cube_id, None)
        finally:
            self._deleting.discard(cube_id)

    def _destroy_files(self, cube_id: str) -> None:
        shutil.rmtree(self.config.storage.data_dir / "cubes" / cube_id, ignore_errors=True)  # its checkpoint
        remove_legacy(self.config.storage.data_dir, cube_id)  # its outbox went with its counters row

    # ------------------------------------------------------------ live actors

    async def activate(self, cube_id: str, caller: Caller | None = None, need: Role = Role.read) -> Activation:
        """The cube's live actor, opened from durable state when it was passivated, with the caller's
        role on it. With a caller, only if it holds ``need`` (None: an internal call, already authorized)."""
        role = require(self._known(cube_id), caller, need) if caller is not None else Role.admin
        self._touch(cube_id)
        handle = self.live.get(cube_id)
        if handle is not None:
            self.live.move_to_end(cube_id)
            return Activation(cube_id, handle, role, self._leases[cube_id])
        task = self._starting.get(cube_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._start(cube_id))
            self._starting[cube_id] = task
        started, lease = await asyncio.shield(task)
        if caller is not None:  # a grant revoked while the cube was starting counts
            role = require(self._known(cube_id), caller, need)
        return Activation(cube_id, started, role, lease)

    async def _start(self, cube_id: str) -> tuple[ActorHandle, int]:
        start = time.perf_counter()
        admitted = False
        try:
            retiring = self._retiring.get(cube_id)
            if retiring is not None:  # its last life is still flushing: open it after
                await retiring
            await self._make_room()
            admitted = True
            self._known(cube_id)  # deleted while we waited?
            try:
                handle = await self._host(cube_id)
            except Exception as exc:
                raise Unavailable(f"cube {cube_id} could not be activated: {exc}", {"cube_id": cube_id}) from exc
            lease = secrets.randbits(62)
            try:
                timeout = self.config.directory.activation_timeout_s
                opening = call(handle, CubeHost.open, lease, self.cubes[cube_id])
                meta = await asyncio.wait_for(opening, timeout=timeout)
            except Exception as exc:  # timed out, died, or its storage failed: not live, and not reused
                ray.kill(handle, no_restart=True)
                raise Unavailable(f"cube {cube_id} could not be activated: {exc}", {"cube_id": cube_id}) from exc
            if meta.updated_at != self.cubes[cube_id].updated_at:  # grants or quotas changed while it started
                await call(handle, CubeHost.set_meta, lease, self.cubes[cube_id])
            self._counters(cube_id, meta)
            self.live[cube_id] = handle
            self._leases[cube_id] = lease
            self._live_since[cube_id] = time.monotonic()
            self._activations += 1
            self._activation_s.append(time.perf_counter() - start)
            metrics.count("memos_cube_activations_total")
            metrics.observe("memos_cube_activation_ms", (time.perf_counter() - start) * 1000)
            metrics.gauge("memos_live_cubes", len(self.live))
            return handle, lease
        finally:
            if admitted:
                self._admitted -= 1
            self._starting.pop(cube_id, None)

    # ------------------------------------------------------------ spare cube actors

    async def _host(self, cube_id: str) -> ActorHandle:
        """A spare cube actor: one left ready, else one a passivation is about to give back, else a new one.
        A big cube takes the spare whose heap is largest (one that hosted a big cube: its memory is there to
        be reused), any other the smallest."""
        big = self.cubes[cube_id].memory_count >= BIG_CUBE
        while True:
            if self._spares:
                pick = max if big else min
                chosen = pick(self._spares, key=lambda spare: spare[1])
                self._spares.remove(chosen)
                self._refill()
                return chosen[0]
            retiring = [t for t in self._retiring.values() if not t.done()]
            if not retiring:
                return await self._spawn()
            await asyncio.wait(retiring, return_when=asyncio.FIRST_COMPLETED)

    async def _spawn(self) -> ActorHandle:
        self._spawning += 1
        try:
            cfg = self.config.directory
            handle = CubeActor.options(  # type: ignore[attr-defined]
                namespace=self.config.namespace, num_cpus=cfg.cube_num_cpus, resources=cfg.cube_resources or None
            ).remote(self.config)
            await asyncio.wait_for(call(handle, CubeHost.ready), timeout=self.config.directory.activation_timeout_s)
            return handle
        finally:
            self._spawning -= 1

    def _refill(self) -> None:
        """Start spares while fewer than ``spare_actors`` are ready or coming back from a passivation (under
        churn every activation's victim gives its actor back: no process is started); then, one at a time in
        the background, more until ``warm_actors`` are started, live or spare."""
        coming = len(self._spares) + len(self._retiring) + self._spawning
        for _ in range(self.config.directory.spare_actors - coming):
            asyncio.get_running_loop().create_task(self._spare())
        if self._unwarmed() > 0 and (self._warming is None or self._warming.done()):
            self._warming = asyncio.get_running_loop().create_task(self._warm())

    def _warm_target(self) -> int:
        cfg = self.config.directory
        return min(cfg.warm_actors, cfg.max_live_cubes)

    def _unwarmed(self) -> int:
        """How many cube actors the pool lacks to hold ``warm_actors`` (live, starting, spare or coming back)."""
        started = len(self.live) + self._admitted + len(self._spares) + len(self._retiring) + self._spawning
        return self._warm_target() - started

    async def _warm(self) -> None:
        while self._unwarmed() > 0 and await self._spare():
            pass

    async def _spare(self) -> bool:
        try:
            self._keep(await self._spawn())
        except Exception as exc:  # the next activation starts one itself
            log.warning("could not start a spare cube actor: %s", exc)
            return False
        return True

    def _keep(self, handle: ActorHandle, footprint_mib: float = 0.0, lives: int = 0) -> None:
        """An empty cube actor: kept as a spare (up to twice ``spare_actors``, so that a burst of passivations
        and activations starts no process, or as many as keep ``warm_actors`` started; at most one whose heap a
        big cube left above ``spare_max_mib``),
        or ended when there are enough or it hosted its share."""
        cfg = self.config.directory
        heavy = footprint_mib > cfg.spare_max_mib
        room = len(self._spares) < max(2 * cfg.spare_actors, self._warm_target() - len(self.live))
        if heavy:
            room = room and not any(mib > cfg.spare_max_mib for _, mib in self._spares)
        if room and lives < cfg.actor_lives:
            self._spares.append((handle, footprint_mib))
            return
        self._retired[handle._actor_id.hex()] = None
        ray.kill(handle, no_restart=True)

    async def _make_room(self) -> None:
        """Take one of the ``max_live_cubes`` slots, passivating least recently used cubes for it.

        Victims are chosen under the lock and passivated in the background (their actors come back as
        spares), so an activation does not wait for another cube's checkpoint.
        When every slot belongs to an actor that is still starting or just started, wait.
        """
        cap = self.config.directory.max_live_cubes
        while True:
            async with self._room:
                while len(self.live) + self._admitted >= cap and self.live:
                    victim = self._victim()
                    if victim is None:  # every live cube is just activated: wait, do not thrash
                        break
                    self._retire(victim, self.live.pop(victim))
                if len(self.live) + self._admitted < cap:
                    self._admitted += 1
                    break
            await asyncio.sleep(0.02)

    def _touch(self, cube_id: str) -> None:
        now = time.monotonic()
        self._heat[cube_id] = (self._heat_at(cube_id, now) + 1.0, now)
        if len(self._heat) > 50 * self.config.directory.max_live_cubes:  # forget the coldest
            for cold in sorted(self._heat, key=lambda c: self._heat_at(c, now))[: len(self._heat) // 2]:
                if cold not in self.live:
                    del self._heat[cold]

    def _heat_at(self, cube_id: str, now: float) -> float:
        heat, when = self._heat.get(cube_id, (0.0, now))
        return heat * 0.5 ** ((now - when) / self.config.directory.heat_half_life_s)

    def _victim(self) -> str | None:
        """Least recently used (lru), or least decayed use (lfu: one-off visitors go before the
        hot set). Cubes activated within the grace period are not evicted: their caller has yet to use
        them (None: all are; more concurrent cubes than the cap then wait for a slot, at most the grace)."""
        cfg = self.config.directory
        now = time.monotonic()
        order = list(self.live)  # least recently used first
        settled = [c for c in order if now - self._live_since.get(c, 0.0) >= cfg.eviction_grace_s]
        if not settled:
            return None
        if cfg.eviction == "lru":
            return settled[0]
        return min(settled, key=lambda c: self._heat_at(c, now))  # min keeps the first (LRU) on ties

    def _retire(self, cube_id: str, handle: ActorHandle) -> asyncio.Task[None]:
        lease = self._leases.pop(cube_id)
        self._passivations += 1  # no longer live: its flush finishes in the background
        metrics.count("memos_cube_passivations_total")
        metrics.gauge("memos_live_cubes", len(self.live))
        task = asyncio.get_running_loop().create_task(self._passivate_actor(cube_id, handle, lease))
        self._retiring[cube_id] = task
        task.add_done_callback(lambda _: self._retiring.pop(cube_id, None))
        return task

    async def _passivate_actor(self, cube_id: str, handle: ActorHandle, lease: int) -> None:
        try:
            released = await call(handle, CubeHost.passivate, lease)
        except Exception as exc:  # its rows were durable when acknowledged: stop it anyway
            log.warning("passivating cube %s failed: %s", cube_id, exc)
            # Calls queued behind passivate() were refused or die with the actor without running:
            # remembering the actor lets callers retry even writes (see drop_dead).
            self._retired[handle._actor_id.hex()] = None
            ray.kill(handle, no_restart=True)
        else:
            meta = released.meta
            if cube_id not in self._deleting and cube_id in self.cubes:
                known = self.cubes[cube_id]
                if (known.seq, known.memory_count, known.text_bytes) != (meta.seq, meta.memory_count, meta.text_bytes):
                    self.catalog.put(self._counters(cube_id, meta))  # a life that only read changes nothing
                if released.cascades_pending:
                    self._resume_cascades(RESUME_AFTER_S)
            self._keep(handle, released.footprint_mib, released.lives)  # its lease is spent: calls for it are refused
        finally:
            while len(self._retired) > 10_000:
                self._retired.popitem(last=False)

    async def passivate(self, cube_id: str) -> bool:
        """Flush and stop a cube's actor; its state stays durable. False if it was not live."""
        handle = self.live.pop(cube_id, None)
        if handle is None:
            return False
        await self._retire(cube_id, handle)
        return True

    async def drop_dead(self, cube_id: str, handle: ActorHandle) -> bool:
        """A caller saw ``handle`` die. Returns True when it was passivated cleanly (so nothing
        the caller sent ran, and a write may be retried); otherwise forgets it, so the next
        ``activate`` starts a fresh actor."""
        if handle._actor_id.hex() in self._retired:
            return True
        current = self.live.get(cube_id)
        if current is not None and current._actor_id == handle._actor_id:
            del self.live[cube_id]
            self._leases.pop(cube_id, None)
            ray.kill(handle, no_restart=True)
        return False

    async def live_cubes(self) -> list[str]:
        return list(self.live)

    async def lifecycle_cubes(self) -> tuple[dict[str, int], list[str]]:
        """The cubes whose lifecycle policy (their own, else the server's default) gives a sweep something to
        do, with their seq as of their last passivation, and which of all cubes are live."""
        default = self.config.scheduler.lifecycle
        seqs = {c: m.seq for c, m in self.cubes.items() if c not in self._deleting and (m.lifecycle or default).sweeps}
        return seqs, list(self.live)

    async def stats(self) -> DirectoryStats:
        times = list(self._activation_s)
        return DirectoryStats(
            cubes=len(self.cubes),
            live=len(self.live),
            max_live=self.config.directory.max_live_cubes,
            activations=self._activations,
            passivations=self._passivations,
            activation_p50_s=statistics.median(times) if times else None,
            activation_max_s=max(times) if times else None,
            spares=len(self._spares),
        )

    async def shutdown(self) -> None:
        """Passivate every live cube, end the spares and the storage actors, close the catalog (clean stop)."""
        if self._warming is not None:
            self._warming.cancel()
        for cube_id in list(self.live):
            await self.passivate(cube_id)
        await asyncio.gather(*self._retiring.values(), return_exceptions=True)
        for handle, _ in self._spares:
            ray.kill(handle, no_restart=True)
        self._spares.clear()
        for storage in self.storage:
            with contextlib.suppress(ray.exceptions.RayError):
                await call(storage, StorageHost.shutdown)
            ray.kill(storage, no_restart=True)
        self.catalog.close()


DirectoryActor = actor_class(Directory, max_restarts=-1, max_concurrency=1000)
