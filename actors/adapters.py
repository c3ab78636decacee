"""The Adapters actor: trains LoRA adapters off the request path and keeps every cube's adapters.

Training is a Ray task with a CPU of its own: it loads a fresh float32 copy of the base model,
fine-tunes a LoRA on the memories' texts, reports each step here (``progress``), and returns the
weights through the object store. This actor then writes the adapter file, updates the cube's
index and, when asked, makes it the active one. For chat it hands out the active adapter's
weights as an ObjectRef: put in the object store once, then mapped by every worker that loads it
(no shared filesystem needed). It runs on the head node, next to its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import ray

from actors.audit import AUDIT_NAME, AuditLog
from actors.calls import actor_class, call, tell
from actors.handoff import AdapterWeights
from actors.metrics import count
from actors.scheduler import SCHEDULER_NAME, Scheduler
from memos_ray.bundles import map_adapter
from memos_ray.config import LLMConfig, MemosConfig
from memos_ray.errors import InvalidInput, JobNotFound
from memos_ray.parametric.jobs import JobStore
from memos_ray.parametric.registry import AdapterRegistry, new_adapter_id, ref_of
from memos_ray.parametric.training import state_nbytes
from memos_ray.types import (
    AdapterBlob,
    AdapterChange,
    AdapterEvaluation,
    AdapterInfo,
    AdapterList,
    AdapterSettings,
    AuditAction,
    AuditEvent,
    MemoryChangeKind,
    MemoryRef,
    ModelIdentity,
    Retrain,
    TrainingJob,
    TrainingMetrics,
    utcnow,
)

ADAPTERS_NAME = "memos_adapters"
JOBS_KEPT = 1_000
REFS_KEPT = 32
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    """A training job in flight: its task and what it learns."""

    ref: ray.ObjectRef
    sources: list[MemoryRef]
    settings: AdapterSettings
    activate: bool


@ray.remote(max_retries=0)
def train_adapter(
    config: MemosConfig, job_id: str, texts: list[str], settings: AdapterSettings
) -> tuple[dict[str, np.ndarray], TrainingMetrics, AdapterEvaluation | None, ModelIdentity]:
    """One training job, in its own worker process: a fresh float32 base model, so the job neither
    shares nor disturbs the model workers' weights."""
    from memos_ray.llm import load_model
    from memos_ray.parametric.training import train_lora

    llm = LLMConfig.model_validate({**config.llm.model_dump(), "dtype": "float32"})
    lm = load_model(llm, config.storage.data_dir / "models")
    manager = ray.get_actor(ADAPTERS_NAME, namespace=config.namespace)

    def progress(step: int, steps: int, loss: float) -> None:
        tell(manager, Adapters.progress, job_id, step, steps, loss)  # training never waits on it

    state, metrics, evaluation = train_lora(lm.model, lm.tokenizer, texts, settings, progress)
    return state, metrics, evaluation, lm.identity


class Adapters:
    def __init__(self, config: MemosConfig) -> None:
        self.config = config
        storage = config.storage
        self.registry = AdapterRegistry(
            storage.data_dir / "adapters.sqlite", storage.database_uri, legacy=storage.data_dir / "adapters"
        )
        self.jobs = JobStore(storage.data_dir / "jobs.sqlite", JOBS_KEPT, storage.database_uri)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, Running] = {}  # job -> its task and what it learns
        self._purged: dict[str, set[str]] = {}  # cube -> memories purged: no job may learn them any more
        self._owed: dict[str, dict[str, Retrain]] = {}  # cube -> retrainings a purge made due, until started
        self._stale_jobs: dict[str, str] = {}  # job -> why its adapter will be stale on arrival
        self._locks: dict[str, asyncio.Lock] = {}  # one per cube: every change of its index is serialised
        self.refs: OrderedDict[str, ray.ObjectRef] = OrderedDict()  # adapter id -> its weights in the store

    def _lock(self, cube_id: str) -> asyncio.Lock:
        return self._locks.setdefault(cube_id, asyncio.Lock())

    async def ready(self) -> bool:
        return True

    # ------------------------------------------------------------ training

    async def start_training(
        self,
        cube_id: str,
        texts: list[str],
        sources: list[MemoryRef],
        settings: AdapterSettings,
        activate: bool,
        created_by: str,
        replaces: str | None = None,
        reason: str | None = None,
    ) -> TrainingJob:
        """``replaces``: the withdrawn adapter (or cancelled job) a retraining stands in for; it is owed once.
        ``reason``: why the policy starts it (kept on the job)."""
        purged = self._purged.get(cube_id, set())
        if any(s.memory_id in purged for s in sources):  # purged after the caller read them: never learned
            kept = [(t, s) for t, s in zip(texts, sources, strict=True) if s.memory_id not in purged]
            texts, sources = [t for t, _ in kept], [s for _, s in kept]
        if replaces is not None and self._owed.get(cube_id, {}).pop(replaces, None) is None:
            raise InvalidInput(f"{replaces} was already trained again", {"replaces": replaces})
        if not texts:
            raise InvalidInput(f"cube {cube_id} has no memories that match: nothing to train on")
        job = TrainingJob(
            id=f"job-{secrets.token_hex(6)}",
            cube_id=cube_id,
            steps=settings.steps,
            memories=len(texts),
            created_by=created_by,
            reason=reason,
            created_at=utcnow(),
        )
        for old in self.jobs.put(job):  # finished jobs beyond JOBS_KEPT are forgotten
            self._tasks.pop(old, None)
        ref = train_adapter.options(num_cpus=self.config.workers.train_num_cpus).remote(
            self.config, job.id, texts, settings
        )
        self._running[job.id] = Running(ref, sources, settings, activate)
        count("memos_training_jobs_total", outcome="started")
        self._tasks[job.id] = asyncio.get_running_loop().create_task(
            self._finish(job.id, ref, sources, settings, activate)
        )
        return job

    async def progress(self, job_id: str, step: int, steps: int, loss: float) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.state in ("queued", "running"):
            update = {
                "state": "running",
                "step": step,
                "steps": steps,
                "percent": round(100.0 * step / steps, 1),
                "loss": loss,
                "started_at": job.started_at or utcnow(),
            }
            self.jobs.put(job.model_copy(update=update))

    async def _finish(
        self,
        job_id: str,
        ref: ray.ObjectRef,
        sources: list[MemoryRef],
        settings: AdapterSettings,
        activate: bool,
    ) -> None:
        job = self.jobs[job_id]
        try:
            state, metrics, evaluation, identity = await ref
            async with self._lock(job.cube_id):
                if self.jobs[job_id].state == "failed":  # cancelled: its cube was deleted, or a source purged
                    return
                stale = self._stale_jobs.pop(job_id, None)
                info = AdapterInfo(
                    id=new_adapter_id(),
                    cube_id=job.cube_id,
                    version=self.registry.take_version(job.cube_id),
                    base_model=identity,
                    settings=settings,
                    sources=sources,
                    metrics=metrics,
                    created_at=utcnow(),
                    created_by=job.created_by,
                    bytes=state_nbytes(state),
                    stale=stale is not None,
                    stale_reason=stale,
                    evaluation=evaluation,
                )
                # kept either way; made active only when fresh (no source edited meanwhile) and it passed its exam
                passed = evaluation is None or evaluation.passed
                activated = activate and stale is None and passed
                await asyncio.to_thread(self.registry.add, info, state, activated)
            count("memos_training_jobs_total", outcome="activated" if activated else "kept")
            update = {
                "state": "succeeded",
                "adapter_id": info.id,
                "percent": 100.0,
                "step": metrics.steps,
                "evaluation": evaluation,
            }
        except Exception as exc:
            if self.jobs[job_id].state == "failed":
                return
            log.exception("training job %s failed", job_id)
            count("memos_training_jobs_total", outcome="failed")
            update = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
        finally:
            self._running.pop(job_id, None)
            self._stale_jobs.pop(job_id, None)
        self.jobs.put(self.jobs[job_id].model_copy(update={**update, "finished_at": utcnow()}))
        await self._record(self.jobs[job_id], activate)

    async def _record(self, job: TrainingJob, activate: bool) -> None:
        """The job's end changes the cube (a new adapter version, maybe the active one): audited like a request."""
        ok = job.state == "succeeded"
        event = AuditEvent(
            principal=job.created_by,
            action=AuditAction.adapter_ready if ok else AuditAction.adapter_failed,
            result="ok" if ok else "error",
            status=200 if ok else 500,
            cube_id=job.cube_id,
            details={"job_id": job.id, "adapter_id": job.adapter_id, "activate": activate, "error": job.error},
        )
        try:
            audit = ray.get_actor(AUDIT_NAME, namespace=self.config.namespace)
            await call(audit, AuditLog.append, [event])
        except Exception:
            log.exception("could not audit the end of training job %s", job.id)

    async def job(self, job_id: str) -> TrainingJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"job {job_id} not found", {"job_id": job_id})
        return job

    # ------------------------------------------------------------ a cube's adapters

    async def listing(self, cube_id: str) -> AdapterList:
        return self.registry.listing(cube_id)

    async def export_blobs(self, cube_id: str) -> list[AdapterBlob]:
        """Every adapter of the cube with its weights blob, and which is active: what a bundle carries."""
        async with self._lock(cube_id):
            listing = self.registry.listing(cube_id)
            blobs = [
                (info, await asyncio.to_thread(self.registry.weights, cube_id, info.id)) for info in listing.adapters
            ]
        return [AdapterBlob(info=info, weights=w, active=info.id == listing.active) for info, w in blobs]

    async def import_blobs(self, cube_id: str, blobs: list[AdapterBlob], id_map: dict[str, str]) -> list[AdapterInfo]:
        """A bundle's adapters into the cube: each a new id and the cube's next version, its sources through the
        memories' id map; made active when ``active`` (the caller decided: same base model, fresh, passed)."""
        added = []
        async with self._lock(cube_id):
            for blob in blobs:
                version = self.registry.take_version(cube_id)
                info = map_adapter(
                    blob.info, target_cube_id=cube_id, new_id=new_adapter_id(), version=version, id_map=id_map
                )
                await asyncio.to_thread(self.registry.add_weights, info, blob.weights, blob.active)
                added.append(info)
        return added

    async def set_active(self, cube_id: str, adapter_id: str | None) -> AdapterList:
        async with self._lock(cube_id):
            return self.registry.set_active(cube_id, adapter_id)

    async def active(self, cube_id: str) -> AdapterWeights | None:
        """The cube's active adapter with its weights in the object store (a reference)."""
        listing = self.registry.listing(cube_id)
        info = next((a for a in listing.adapters if a.id == listing.active), None)
        if info is None:
            return None
        ref = self.refs.get(info.id)
        if ref is None:
            _, state = await asyncio.to_thread(self.registry.state, cube_id, info.id)
            ref = ray.put(state)
            self.refs[info.id] = ref
            while len(self.refs) > REFS_KEPT:
                self.refs.popitem(last=False)
        self.refs.move_to_end(info.id)
        return AdapterWeights(ref_of(info), ref)

    async def memory_changed(self, cube_id: str, memory_ids: list[str], what: MemoryChangeKind) -> AdapterChange:
        """Mark the adapters that learned from these memories stale (and those still training: on arrival).
        A purge withdraws them instead: erased text must not keep answering from the weights, so they are
        deleted from disk and every worker, and the jobs still learning it are cancelled (the MemScheduler
        decides what is trained again without it)."""
        ids = set(memory_ids)
        learning = [
            job_id
            for job_id, run in self._running.items()
            if self.jobs[job_id].cube_id == cube_id and any(s.memory_id in ids for s in run.sources)
        ]
        if what == "purged":
            self._purged.setdefault(cube_id, set()).update(ids)
            retrain = [
                Retrain(replaces=job_id, settings=run.settings, sources=run.sources)
                for job_id in learning
                if (run := self._running[job_id]).activate
            ]
            for job_id in learning:
                self._cancel(job_id, "a memory it learned from was purged")
            async with self._lock(cube_id):
                listing = self.registry.listing(cube_id)
                learned = [a for a in listing.adapters if any(s.memory_id in ids for s in a.sources)]
                for info in learned:
                    self.refs.pop(info.id, None)
                    self.registry.remove(cube_id, info.id)
            await self._unload([a.id for a in learned])
            retrain += [
                Retrain(replaces=a.id, settings=a.settings, sources=a.sources)
                for a in learned
                if a.id == listing.active
            ]
            owed = self._owed.setdefault(cube_id, {})
            owed.update({r.replaces: r for r in retrain})
            # all that is owed, again on a retried cascade: one whose first try failed after withdrawing still retrains
            return AdapterChange(withdrawn=[a.id for a in learned], cancelled=learning, retrain=list(owed.values()))
        reason = f"memory {', '.join(sorted(memory_ids)[:3])} {what} after training"
        for job_id in learning:
            self._stale_jobs[job_id] = reason
        async with self._lock(cube_id):
            marked = self.registry.mark_stale(cube_id, ids, reason)
        return AdapterChange(marked=marked)

    def _cancel(self, job_id: str, why: str) -> None:
        """A running job must not bring back what it learned: failed, and its task cancelled."""
        ref = self._running[job_id].ref
        self.jobs.put(self.jobs[job_id].model_copy(update={"state": "failed", "error": why, "finished_at": utcnow()}))
        ray.cancel(ref, force=True)

    async def delete(self, cube_id: str, adapter_id: str) -> AdapterList:
        """Remove one adapter version: from disk, then from every model worker (with the caches computed
        under it)."""
        async with self._lock(cube_id):
            self.refs.pop(adapter_id, None)
            listing = self.registry.remove(cube_id, adapter_id)
        await self._unload([adapter_id])
        return listing

    async def _unload(self, adapter_ids: list[str]) -> None:
        """Off every model worker, with the KV caches computed under them (no Scheduler: none loaded them)."""
        with contextlib.suppress(ValueError):
            scheduler = ray.get_actor(SCHEDULER_NAME, namespace=self.config.namespace)
            if adapter_ids:
                await call(scheduler, Scheduler.drop_adapters, adapter_ids)

    async def drop_cube(self, cube_id: str) -> list[str]:
        """A deleted cube: its adapters go, from disk and from every worker, and its running jobs are cancelled
        (they must not bring it back)."""
        for job_id in list(self._running):
            if self.jobs[job_id].cube_id == cube_id:
                self._cancel(job_id, "the cube was deleted")
        async with self._lock(cube_id):
            ids = self.registry.drop_cube(cube_id)
        for adapter_id in ids:
            self.refs.pop(adapter_id, None)
        await self._unload(ids)
        return ids


AdaptersActor = actor_class(Adapters, max_restarts=-1, max_concurrency=64)
