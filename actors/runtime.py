"""Finding or starting the cluster-wide actors: one Directory, one Embedder, one Identity, one
AuditLog, one Adapters, one MemScheduler (the policy) and one Scheduler (with its model workers) per
namespace.

All are detached named actors, so every Serve replica (and the CLI, tests, benchmarks)
reaches the same ones, and they outlive a replica restart. ``get_if_exists`` makes
concurrent starts safe.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle

from actors.adapters import ADAPTERS_NAME, AdaptersActor
from actors.audit import AUDIT_NAME, AuditLogActor
from actors.calls import ON_HEAD
from actors.directory import DIRECTORY_NAME, Directory, DirectoryActor
from actors.embedder import EMBEDDER_NAME, EmbedderActor
from actors.idempotency import IDEMPOTENCY_NAME, IdempotencyActor
from actors.identity import IDENTITY_NAME, IdentityActor
from actors.memscheduler import MEMSCHEDULER_NAME, MemSchedulerActor
from actors.scheduler import SCHEDULER_NAME, SchedulerActor
from actors.worker import worker_name
from memos_ray.config import MemosConfig


@dataclass(frozen=True)
class Runtime:
    directory: ActorHandle
    embedder: ActorHandle
    identity: ActorHandle
    audit: ActorHandle
    adapters: ActorHandle
    memscheduler: ActorHandle
    idempotency: ActorHandle


def _shared(
    cls: Any, name: str, config: MemosConfig, num_cpus: float, *args: Any, on_head: bool = False
) -> ActorHandle:
    """The detached actor ``name`` of this namespace, started if nobody has yet (race-free)."""
    return cls.options(
        name=name,
        namespace=config.namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=num_cpus,
        resources=ON_HEAD if on_head else {},
    ).remote(*args)


def ensure_runtime(config: MemosConfig, wait: bool = True) -> Runtime:
    # The control plane runs on the head, whose fate it shares as Serve's controller does: the Directory (a
    # cube's cascade outbox is in its counters, with its rows), the stores' owners (their tables: SQLite files on
    # the head's disk, or PostgreSQL) and the Scheduler. Each takes next to nothing; a worker node's loss then
    # restarts only what computes there (cubes, model workers, the Embedder), not the actors every request asks.
    directory = _shared(DirectoryActor, DIRECTORY_NAME, config, 0.01, config, on_head=True)
    embedder = _shared(EmbedderActor, EMBEDDER_NAME, config, config.embedder.num_cpus, config.embedder)
    identity = _shared(IdentityActor, IDENTITY_NAME, config, 0.01, config, on_head=True)
    audit = _shared(AuditLogActor, AUDIT_NAME, config, 0.01, config, on_head=True)
    adapters = _shared(AdaptersActor, ADAPTERS_NAME, config, 0.01, config, on_head=True)
    memscheduler = _shared(MemSchedulerActor, MEMSCHEDULER_NAME, config, 0.01, config, on_head=True)
    idempotency = _shared(IdempotencyActor, IDEMPOTENCY_NAME, config, 0.01, config, on_head=True)
    memscheduler.ready.remote()  # starts its sweep (it stays passive until the Scheduler exists)
    if wait:
        shared = (directory, embedder, identity, audit, adapters, memscheduler, idempotency)
        ray.get([a.ready.remote() for a in shared])
    return Runtime(
        directory=directory,
        embedder=embedder,
        identity=identity,
        audit=audit,
        adapters=adapters,
        memscheduler=memscheduler,
        idempotency=idempotency,
    )


def ensure_scheduler(config: MemosConfig, wait: bool = True) -> ActorHandle:
    """The Scheduler and its model workers (started on first use: loading the LLM costs seconds)."""
    scheduler = _shared(SchedulerActor, SCHEDULER_NAME, config, 0.01, config, on_head=True)
    if wait:
        ray.get(scheduler.ready.remote())
    return scheduler


def shutdown_runtime(config: MemosConfig) -> None:
    """Passivate every cube (flushing storage) and end the shared actors."""
    names = (
        MEMSCHEDULER_NAME,
        DIRECTORY_NAME,
        EMBEDDER_NAME,
        SCHEDULER_NAME,
        IDENTITY_NAME,
        AUDIT_NAME,
        ADAPTERS_NAME,
        IDEMPOTENCY_NAME,
    )
    workers = tuple(worker_name(i) for i in range(config.workers.count))  # detached: they outlive a Scheduler
    for name in (*names, *workers):
        try:
            handle = ray.get_actor(name, namespace=config.namespace)
        except ValueError:
            continue
        if name == DIRECTORY_NAME:
            with contextlib.suppress(ray.exceptions.RayError):  # gone already: nothing left to flush
                ray.get(getattr(handle, Directory.shutdown.__name__).remote(), timeout=60)
        ray.kill(handle, no_restart=True)
