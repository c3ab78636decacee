"""The MemScheduler: the one place that decides which memories live in which form. It watches usage
(recorded off the request path by each ingress, :mod:`actors.usage`) and applies the policy of
:mod:`memos_ray.scheduling.policy`, event-driven and in a periodic sweep:

- *promotion*: an active cube's working set (its hottest memories, up to a token budget) is handed to the
  cube, which holds it and returns it with every recall; its KV prefix is built ahead of need on the worker
  that will serve it (:meth:`Scheduler.prebuild`), when it is at least the measured break-even length and
  the build CPU share allows;
- *demotion*: caches unused for a window leave the workers, then the disk; never one in use;
- *prefetch*: a session (``POST /v1/sessions``, or an agent's first chat after idle) warms its cubes'
  prefix and adapter on the worker that will serve them;
- *lifecycle*: each cube's memories expire, archive and merge under its policy (a sweep of the live cubes,
  and of passivated ones only when a memory of theirs falls due), every move a new version;
- *retraining*: an adapter withdrawn because it learned a purged memory is trained again without it, when
  it was the cube's active one;
- *plaintext -> parametric*: an active cube with enough stable, used facts and no adapter (or a stale one)
  gets a training job, one at a time; it becomes active only if it passes its exam.

Every decision is recorded with its reason and inputs (:class:`DecisionLog`). The Scheduler stays the
mechanism: where caches are and how they move. Passive until the Scheduler exists (no model workers: no
KV to manage); it never starts them, except for a session, whose point is to be ready.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable

from ray.actor import ActorHandle

from actors import metrics
from actors.adapters import ADAPTERS_NAME, Adapters
from actors.calls import NamedActors, actor_class, call
from actors.cube import CubeHost
from actors.cubes import Cubes
from actors.directory import DIRECTORY_NAME, Directory
from actors.handoff import AdapterWeights
from actors.scheduler import SCHEDULER_NAME, Scheduler
from memos_ray.activation.prompt import PINNED_TAG, prefix_plan
from memos_ray.config import MemosConfig
from memos_ray.errors import InvalidInput, JobNotFound
from memos_ray.scheduling.decisions import DecisionLog
from memos_ray.scheduling.marks import LifecycleMarks, Mark
from memos_ray.scheduling.policy import CANDIDATES, BuildBudget, demotions
from memos_ray.scheduling.usage import UsageStore
from memos_ray.types import (
    AdapterChange,
    CubeUsage,
    DecisionInput,
    DecisionKind,
    DecisionPage,
    LifecycleSweep,
    Retrain,
    Role,
    SchedulerStatus,
    Session,
    SessionCreate,
    TrainRequest,
    UsageEvent,
    Warmed,
    utcnow,
)

MEMSCHEDULER_NAME = "memos_memscheduler"
AUTHOR = "memscheduler"  # the author of the versions its moves write
SESSIONS_KEPT = 1_000
WAKE_PER_SWEEP = 32  # passivated cubes a lifecycle sweep starts, at most (the rest wait for the next)
IDS_SHOWN = 8  # memory ids a lifecycle decision lists
log = logging.getLogger(__name__)


class MemScheduler:
    def __init__(self, config: MemosConfig) -> None:
        self.config = config
        self.cfg = config.scheduler
        root = config.storage.data_dir / "scheduler"
        uri = config.storage.database_uri
        self.usage = UsageStore(root / "usage.sqlite", self.cfg.window_s, uri)
        self.log = DecisionLog(root / "decisions.sqlite", self.cfg.decisions_kept, uri)
        self.marks = LifecycleMarks(root / "lifecycle.sqlite", uri)
        self.parametric = self.cfg.train_policy  # whether it promotes facts into adapters on its own
        self._training: str | None = None  # the training job the policy started, while it runs
        self._promoting = asyncio.Lock()  # one parametric sweep decides at a time
        self._attempted: dict[str, str] = {}  # cube -> the facts (id@version) the policy last trained on
        self._lifecycle: asyncio.Task[None] | None = None
        self.budget = BuildBudget(self.cfg.build_cpu_share, config.workers.count)
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.actors = NamedActors(config.namespace)
        self._cubes: Cubes | None = None
        self._last: dict[str, str] = {}  # cube id -> what was last decided for it (a decision is recorded once)
        self._fresh: set[str] = set()  # cubes used since their last promotion: the only ones a sweep looks at
        self._busy: set[str] = set()  # cubes being promoted now
        self._loop: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # promotions started by an event (held: not collected)
        switched = self.log.query(limit=1, kind=DecisionKind.policy).decisions
        self.enabled = bool(switched[-1].inputs["enabled"]) if switched else self.cfg.enabled

    async def ready(self) -> bool:
        self._ensure_sweeps()
        return self.enabled

    def _ensure_sweeps(self) -> None:
        """The periodic KV sweep runs while the policy is on, the lifecycle sweep always (each cube's own policy
        says what it does); started from any call (a restarted actor gets no ``ready``)."""
        if self.enabled and self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(self._sweeps())
        if self._lifecycle is None:
            self._lifecycle = asyncio.get_running_loop().create_task(self._lifecycle_sweeps())

    async def set_enabled(self, enabled: bool, by: str = "operator") -> bool:
        """Turn the policy on or off at run time (an operator's switch, recorded as a decision, so it holds
        across restarts; benchmarks compare both in one run). Off: no sweeps, and the live cubes drop their
        working sets, so chats run on pinned prefixes only."""
        if enabled != self.enabled:
            self.log.add(
                DecisionKind.policy,
                f"{by} turned the policy {'on' if enabled else 'off'}",
                inputs={"enabled": enabled, "by": by},
            )
        self.enabled = enabled
        if enabled:
            self._fresh.update(self.usage.active_cubes(time.time() - self.cfg.active_s))  # all due a working set
            return await self.ready()
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None
        directory = self.actors.get(DIRECTORY_NAME)
        live = set(await call(directory, Directory.live_cubes)) if directory is not None else set()
        for cube_id, stats in self.usage.cubes.items():
            if stats.working_set and cube_id in live:
                cube = await self.cubes().open(cube_id, None, Role.read)
                await cube.call(CubeHost.set_working_set, [], 0, PINNED_TAG)
            if stats.working_set:
                self.usage.set_working_set(cube_id, [])
        self._last.clear()
        return False

    # ------------------------------------------------------------ the actors it works through

    def _scheduler(self, start: bool = False) -> ActorHandle | None:
        if start and self.actors.get(SCHEDULER_NAME) is None:
            from actors.runtime import ensure_scheduler  # the runtime starts this actor: imported late

            self.actors.put(SCHEDULER_NAME, ensure_scheduler(self.config, wait=False))
        return self.actors.get(SCHEDULER_NAME)

    def cubes(self) -> Cubes:
        if self._cubes is None:
            directory = self.actors.get(DIRECTORY_NAME)
            if directory is None:
                raise RuntimeError("the Directory is not running")
            self._cubes = Cubes(directory)
        return self._cubes

    # ------------------------------------------------------------ usage

    def record(self, events: list[UsageEvent]) -> None:
        """A batch from an ingress. An agent's first chat after idle starts a session: its cube is promoted
        now rather than at the next sweep."""
        self._ensure_sweeps()
        now = time.time()
        starting = {
            e.cube_id: e.agent
            for e in events
            if e.chat and ((last := self.usage.last_chat_of(e.agent)) is None or now - last > self.cfg.session_idle_s)
        }
        self.usage.record(events)
        self._fresh.update(e.cube_id for e in events)
        if self.enabled and self._scheduler() is not None:
            for cube_id, agent in starting.items():
                why = f"agent {agent}'s first chat after {self.cfg.session_idle_s:.0f} s idle"
                self._spawn(self.promote(cube_id, why, kind=DecisionKind.prefetch))

    def usage_of(self, cube_id: str, limit: int = 100) -> CubeUsage:
        return self.usage.cube(cube_id, limit)

    def forget(self, cube_id: str, memory_ids: list[str] | None = None, change: AdapterChange | None = None) -> None:
        """A purge (or the cube's deletion, with None): its usage goes too; when it withdrew the cube's active
        adapter (or the job that was to become it), one is trained from the same memories less the erased ones,
        off this call's path."""
        self.usage.forget(cube_id, memory_ids)
        if memory_ids is None:
            self.marks.forget(cube_id)
        for retrain in change.retrain if change is not None else []:
            self._spawn(self._retrain(cube_id, retrain, set(memory_ids or [])))

    def _spawn(self, work: Awaitable[object]) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retrain(self, cube_id: str, retrain: Retrain, purged: set[str]) -> None:
        keep = [r.memory_id for r in retrain.sources if r.memory_id not in purged][:5_000]
        adapters = self.actors.get(ADAPTERS_NAME)
        inputs: dict[str, DecisionInput] = {"replaces": retrain.replaces, "purged": len(purged)}
        chosen = []
        if keep and adapters is not None:
            cube = await self.cubes().open(cube_id, None, Role.read)
            req = TrainRequest(settings=retrain.settings, kinds=[], memory_ids=keep, max_memories=len(keep))
            chosen = await cube.call(CubeHost.training_set, req)
        if not chosen or adapters is None:
            why = f"{retrain.replaces} learned a purged memory; nothing else it learned is left to train on"
            self.log.add(DecisionKind.skip, why, cube_id=cube_id, inputs=inputs)
            return
        texts, refs = [m.text for m in chosen], [m.ref for m in chosen]
        why = f"the active adapter ({retrain.replaces}) learned a purged memory: trained again without it"
        try:
            job = await call(
                adapters,
                Adapters.start_training,
                cube_id,
                texts,
                refs,
                retrain.settings,
                True,
                AUTHOR,
                retrain.replaces,
                why,
            )
        except InvalidInput as exc:  # trained again already (a retried cascade), or nothing left after a purge
            self.log.add(
                DecisionKind.skip, f"no retraining for {retrain.replaces}: {exc}", cube_id=cube_id, inputs=inputs
            )
            return
        self.log.add(
            DecisionKind.retrain, why, cube_id=cube_id, inputs={**inputs, "job_id": job.id, "memories": len(chosen)}
        )

    # ------------------------------------------------------------ promotion and prefetch

    async def _adapter(self, cube_id: str, wanted: bool = True) -> AdapterWeights | None:
        adapters = self.actors.get(ADAPTERS_NAME)
        if not wanted or adapters is None:
            return None
        try:
            return await call(adapters, Adapters.active, cube_id)
        except Exception:  # the chat falls back to the base model the same way
            return None

    def _decide(
        self,
        kind: DecisionKind,
        reason: str,
        cube_id: str,
        inputs: dict[str, DecisionInput],
        key: str | None = None,
        worker: int | None = None,
    ) -> None:
        """Record a decision, once per cube while nothing changes (a sweep repeats itself)."""
        mark = f"{kind}:{reason}:{key}"
        if self._last.get(cube_id) == mark and kind != DecisionKind.prefetch:
            return
        self._last[cube_id] = mark
        self.log.add(kind, reason, cube_id=cube_id, key=key, worker=worker, inputs=inputs)
        metrics.count("memos_scheduler_decisions_total", kind=str(kind))

    async def promote(
        self, cube_id: str, why: str, kind: DecisionKind = DecisionKind.promote, adapter_wanted: bool = True
    ) -> Warmed:
        """Hand the cube its working set and make sure its prefix (pinned + working set) is held by a worker."""
        if not self.enabled:
            return Warmed(cube_id=cube_id, status="skipped", reason="the scheduling policy is off")
        scheduler = self._scheduler(start=kind == DecisionKind.prefetch)
        if scheduler is None or cube_id in self._busy:
            return Warmed(cube_id=cube_id, status="skipped", reason="busy" if scheduler else "no model workers yet")
        self._busy.add(cube_id)
        self._fresh.discard(cube_id)  # usage that arrives meanwhile makes it fresh again
        try:
            warmed = await self._promote(scheduler, cube_id, why, kind, adapter_wanted)
        except BaseException:
            self._fresh.add(cube_id)
            raise
        finally:
            self._busy.discard(cube_id)
        if warmed.status == "skipped":  # over the build budget: the next sweep tries again
            self._fresh.add(cube_id)
        return warmed

    def _ranking(self, cube_id: str) -> list[tuple[str, float]]:
        """Hottest first; members of the current working set count ``working_set_stickiness`` hotter, so a set
        changes (and its prefix is rebuilt) only for a clearly hotter newcomer."""
        stats = self.usage.cubes.get(cube_id)
        current = set(stats.working_set) if stats else set()
        sticky = self.cfg.working_set_stickiness
        ranked = [(m, h * sticky if m in current else h) for m, h in self.usage.ranked(cube_id)]
        ranked.sort(key=lambda r: r[1], reverse=True)
        return [r for r in ranked if r[1] >= self.cfg.working_set_min_heat][:CANDIDATES]

    async def _promote(
        self, scheduler: ActorHandle, cube_id: str, why: str, kind: DecisionKind, adapter_wanted: bool
    ) -> Warmed:
        """The cube's working set is proposed first; its prefix is built; only then does the cube switch to it,
        so a chat never finds a working set whose cache is still to be computed."""
        break_even = self.cfg.min_prefix_tokens
        if break_even is None:
            break_even = await call(scheduler, Scheduler.calibrated)
        ranked = self._ranking(cube_id)
        ids_ranked = [m for m, _ in ranked]
        budget_tokens = self.cfg.working_set_tokens
        cube = await self.cubes().open(cube_id, None, Role.read)
        ws = await cube.call(CubeHost.set_working_set, ids_ranked, budget_tokens, PINNED_TAG, break_even, False)
        ids = [m.id for m in ws.items]
        prefix = [*ws.pinned, *ws.items]
        adapter = await self._adapter(cube_id, adapter_wanted)
        heats = dict(ranked)
        figures: dict[str, DecisionInput] = {
            "memories": len(ids),
            "pinned": len(ws.pinned),
            "tokens_est": ws.tokens,
            "changed": ws.changed,
            "break_even": break_even,
            "hottest": round(max((heats[m] for m in ids), default=0.0), 3),
            "coolest": round(min((heats[m] for m in ids), default=0.0), 3),
        }

        async def commit() -> int:
            if ws.changed:
                await cube.call(CubeHost.set_working_set, ids, budget_tokens, PINNED_TAG, break_even, True)
            stats = self.usage.cubes.get(cube_id)
            return self.usage.set_working_set(cube_id, ids) if stats is None or stats.working_set != ids else 0

        if not prefix:
            await commit()
            if adapter is not None:
                worker = await call(scheduler, Scheduler.warm_adapter, adapter)
                self._decide(kind, f"{why}: no prefix to hold; adapter warmed", cube_id, figures, worker=worker)
                return Warmed(
                    cube_id=cube_id,
                    status="nothing",
                    worker=worker,
                    adapter=adapter.adapter.adapter_id,
                    reason="no pinned memory and no working set yet",
                )
            reason = ws.reason or "no pinned memory and no memory hot enough yet"
            self._decide(DecisionKind.skip, reason, cube_id, figures)
            return Warmed(cube_id=cube_id, status="nothing", reason=reason)
        plan = prefix_plan([cube_id], prefix, adapter.adapter if adapter else None)
        now = time.time()
        if kind == DecisionKind.promote and ws.changed and not self.budget.allows(now):
            used, allowed = self.budget.used(now), self.budget.allowed_s
            reason = f"build budget spent: {used:.1f} s of {allowed:.1f} s in the last minute; the old set stays"
            self._decide(DecisionKind.skip, reason, cube_id, figures)
            return Warmed(cube_id=cube_id, status="skipped", reason=reason)
        warmed = await call(scheduler, Scheduler.prebuild, plan, adapter)
        churn = await commit()
        if warmed.status != "held":
            self.budget.spend(warmed.compute_ms / 1000, now)
        if warmed.status != "held" or kind == DecisionKind.prefetch or churn:
            reason = f"{why}: prefix {warmed.status} on worker {warmed.worker}"
            self._decide(
                kind,
                reason,
                cube_id,
                {**figures, "churn": churn, "tokens": warmed.tokens, "compute_ms": warmed.compute_ms},
                key=warmed.key,
                worker=warmed.worker,
            )
        return warmed.model_copy(update={"reason": why})

    async def open_session(self, agent: str, req: SessionCreate) -> Session:
        """Warm the cubes' prefixes (and the first cube's adapter) on the workers that will serve them; the
        caller authorized ``agent`` on every cube."""
        session_id = f"s{secrets.token_hex(8)}"
        why = f"session {session_id} of {agent}"
        warmed = []
        for i, cube_id in enumerate(req.cube_ids):
            wanted = req.use_parametric_memory and i == 0
            warmed.append(await self.promote(cube_id, why, kind=DecisionKind.prefetch, adapter_wanted=wanted))
        session = Session(
            session_id=session_id, agent=agent, cube_ids=list(req.cube_ids), started_at=utcnow(), warmed=warmed
        )
        self.sessions[session_id] = session
        while len(self.sessions) > SESSIONS_KEPT:
            self.sessions.popitem(last=False)
        return session

    # ------------------------------------------------------------ the sweep

    async def _sweeps(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sweep_s)
            await self._quietly(self.sweep())

    @staticmethod
    async def _quietly(work: Awaitable[object]) -> None:
        try:
            await work
        except Exception:
            log.exception("MemScheduler step failed; the next sweep tries again")

    async def sweep(self) -> int:
        """One pass: promote the working set of every live active cube used since its last promotion (a cube
        with no new use keeps its set: heats decay alike, so their order holds), then demote what has gone
        cold (a demoted cache comes back only with new use). Returns the decisions recorded (also callable
        directly: tests and benchmarks need not wait for the timer)."""
        scheduler = self._scheduler()
        directory = self.actors.get(DIRECTORY_NAME)
        if scheduler is None or directory is None or not self.enabled:
            return 0
        before = self.log.seq
        live = set(await call(directory, Directory.live_cubes))
        for cube_id in self.usage.active_cubes(time.time() - self.cfg.active_s):
            if cube_id in live and cube_id in self._fresh:
                await self._quietly(self.promote(cube_id, "working set of an active cube"))
        await self._demote(scheduler)
        return self.log.seq - before

    async def _demote(self, scheduler: ActorHandle) -> None:
        places = await call(scheduler, Scheduler.places, False)
        cubes_of = {c.key: c.cube_ids for c in places.caches}
        for move in demotions(places.caches, places.disk, utcnow(), self.cfg):
            cube_id = next(iter(cubes_of.get(move.key, [])), None)
            if move.kind == DecisionKind.demote:
                workers = await call(scheduler, Scheduler.demote, move.key)
                if workers:
                    self.log.add(
                        move.kind, move.reason, cube_id=cube_id, key=move.key, worker=workers[0], inputs=move.inputs
                    )
            elif await call(scheduler, Scheduler.evict_disk, move.key):
                self.log.add(move.kind, move.reason, cube_id=cube_id, key=move.key, inputs=move.inputs)

    # ------------------------------------------------------------ the lifecycle sweep

    async def _lifecycle_sweeps(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.lifecycle_sweep_s)
            await self._quietly(self.sweep_lifecycle())
            await self._quietly(self.sweep_parametric())

    def set_parametric(self, on: bool) -> bool:
        """Turn parametric promotion on or off at run time (tests and operators; not kept across restarts)."""
        self.parametric = on
        return on

    async def sweep_parametric(self, now: float | None = None, only: list[str] | None = None) -> str | None:
        """Promote one cube's stable, used facts into an adapter: at most one job the policy started runs at a
        time (the training CPU budget). Returns the job started, if any. ``only``: consider these cubes alone."""
        adapters = self.actors.get(ADAPTERS_NAME)
        if not self.parametric or adapters is None or self.actors.get(DIRECTORY_NAME) is None:
            return None
        if self._promoting.locked():  # a sweep is deciding already (the timer's, or one asked for)
            return None
        async with self._promoting:
            return await self._sweep_parametric(adapters, time.time() if now is None else now, only)

    async def _sweep_parametric(self, adapters: ActorHandle, now: float, only: list[str] | None) -> str | None:
        if self._training is not None:
            try:
                job = await call(adapters, Adapters.job, self._training)
                if job.state in ("queued", "running"):
                    return None
            except JobNotFound:  # forgotten (old, or the Adapters actor restarted): not running any more
                pass
            self._training = None
        cfg = self.cfg
        for cube_id in self.usage.active_cubes(now - cfg.active_s):
            if only is not None and cube_id not in only:
                continue
            stats = self.usage.cubes[cube_id]
            used = [m for m, s in stats.memories.items() if s.retrievals + s.prompt_uses >= cfg.train_min_uses]
            if len(used) < cfg.train_min_facts:
                continue
            listing = await call(adapters, Adapters.listing, cube_id)
            active = next((a for a in listing.adapters if a.id == listing.active), None)
            if active is not None and not active.stale:
                continue
            cube = await self.cubes().open(cube_id, None, Role.read)
            req = TrainRequest(settings=cfg.train_settings, memory_ids=used[:5_000], max_memories=5_000)
            facts = [
                m
                for m in await cube.call(CubeHost.training_set, req)
                if now - m.updated_at.timestamp() >= cfg.train_stable_s
            ]
            attempt = ",".join(sorted(f"{m.id}@{m.version}" for m in facts))
            if len(facts) < cfg.train_min_facts or self._attempted.get(cube_id) == attempt:
                continue  # not enough yet, or exactly these were tried (and did not pass)
            texts, refs = [m.text for m in facts], [m.ref for m in facts]
            why = "its stale adapter" if active is not None else "no adapter"
            reason = (
                f"{len(facts)} facts unchanged for {cfg.train_stable_s:.0f} s and used at least {cfg.train_min_uses}"
                f" times, and {why}: trained (active only if it passes its exam)"
            )
            job = await call(
                adapters, Adapters.start_training, cube_id, texts, refs, cfg.train_settings, True, AUTHOR, None, reason
            )
            self._attempted[cube_id] = attempt
            self._training = job.id
            self.log.add(DecisionKind.train, reason, cube_id=cube_id, inputs={"job_id": job.id, "facts": len(facts)})
            return job.id
        return None

    async def sweep_lifecycle(self, now: float | None = None) -> list[LifecycleSweep]:
        """Every live cube whose policy has something to do, and the passivated ones with a memory due (or never
        swept): expired, archived and merged, each move a decision. ``now`` (epoch seconds) lets a benchmark or
        test run the clock forward."""
        directory = self.actors.get(DIRECTORY_NAME)
        if directory is None:
            return []
        now = time.time() if now is None else now
        seqs, live_ids = await call(directory, Directory.lifecycle_cubes)
        live = set(live_ids)
        asleep = 0
        swept = []
        for cube_id, seq in seqs.items():
            mark = self.marks.get(cube_id)
            if cube_id not in live:
                quiet = mark is not None and seq <= mark.seq  # not written since its last sweep
                if quiet and (mark.next_due is None or mark.next_due > now):  # type: ignore[union-attr]
                    continue  # and nothing falls due: left asleep
                asleep += 1
                if asleep > WAKE_PER_SWEEP:
                    continue
            try:
                swept.append(await self._sweep_cube(cube_id, mark, now))
            except Exception:
                log.exception("lifecycle sweep of cube %s failed; the next sweep tries again", cube_id)
        return swept

    async def _sweep_cube(self, cube_id: str, mark: Mark | None, now: float) -> LifecycleSweep:
        cube = await self.cubes().open(cube_id, None, Role.read)
        used = self.usage.last_used(cube_id)
        result = await cube.call(CubeHost.sweep_lifecycle, used, now, mark.merge_seq if mark else 0, AUTHOR)
        self.marks.put(cube_id, Mark(result.merge_seq, result.seq, result.next_due, now))
        figures: dict[str, DecisionInput] = {"took_ms": result.took_ms, "checked": result.checked}
        for kind, ids, why in (
            (DecisionKind.expire, result.expired, "past its kind's time to live"),
            (DecisionKind.archive, result.archived, "unused for the cube's archive period (below its salience bar)"),
        ):
            if ids:
                shown = ", ".join(ids[:IDS_SHOWN])
                reason = f"{len(ids)} memories {why}: {shown}{' ...' if len(ids) > IDS_SHOWN else ''}"
                self.log.add(kind, reason, cube_id=cube_id, inputs={**figures, "memories": len(ids)})
        if result.merged:
            pairs = list(result.merged.items())
            shown = ", ".join(f"{d} -> {s}" for d, s in pairs[:IDS_SHOWN])
            reason = f"{len(pairs)} near-duplicates merged into the oldest of each: {shown}"
            inputs = {**figures, "memories": len(pairs), "into": len(set(result.merged.values()))}
            self.log.add(DecisionKind.merge, reason, cube_id=cube_id, inputs=inputs)
        return result

    # ------------------------------------------------------------ what it shows

    def decisions(
        self,
        after_seq: int | None = None,
        limit: int = 100,
        kind: DecisionKind | None = None,
        cube_id: str | None = None,
    ) -> DecisionPage:
        return self.log.query(after_seq, limit, kind, cube_id)

    async def status(self) -> SchedulerStatus | None:
        self._ensure_sweeps()
        scheduler = self._scheduler()
        if scheduler is None:
            return None
        places = await call(scheduler, Scheduler.places)
        now = time.time()
        return SchedulerStatus(
            enabled=self.enabled,
            break_even_tokens=self.cfg.min_prefix_tokens or places.break_even_tokens,
            workers=places.workers,
            caches=places.caches,
            disk_bytes=sum(places.disk.values()),
            disk_budget=self.cfg.disk_budget_mb * 1024 * 1024,
            build_s_window=round(self.budget.used(now), 3),
            build_s_budget=self.budget.allowed_s,
            decisions=self.log.seq,
            cubes_with_working_sets=sum(1 for s in self.usage.cubes.values() if s.working_set),
        )


MemSchedulerActor = actor_class(MemScheduler, max_restarts=-1, max_concurrency=64)

__all__ = ["MEMSCHEDULER_NAME", "MemScheduler", "MemSchedulerActor"]
