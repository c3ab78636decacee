"""What the routes stand on: one :class:`Services` per replica, reached through a dependency.

The handles live here once (not also on the deployment), and routes name what they need in their
signature (``svc: Services = Svc``), so a router is testable with any app that sets
``app.state.services``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from fastapi import Depends, Request
from ray.actor import ActorHandle

from actors.bundles import BundleService
from actors.chat import ChatService
from actors.cubes import Cubes
from actors.embedder import embedding
from actors.memories import MemoryService
from actors.runtime import ensure_runtime
from actors.usage import UsageRecorder
from memos_ray.config import MemosConfig
from memos_ray.governance.redact import Redactor


@dataclass
class Services:
    config: MemosConfig
    directory: ActorHandle
    embedder: ActorHandle
    identity: ActorHandle
    audit: ActorHandle
    adapters: ActorHandle
    memscheduler: ActorHandle
    idempotency: ActorHandle
    embed: Callable[[list[str]], Awaitable[np.ndarray]]
    cubes: Cubes
    memories: MemoryService
    chat: ChatService
    bundles: BundleService

    @classmethod
    def start(cls, config: MemosConfig) -> Services:
        runtime = ensure_runtime(config, wait=False)
        usage = UsageRecorder(lambda: runtime.memscheduler)
        cubes = Cubes(runtime.directory, usage)
        embed = embedding(runtime.embedder)
        memories = MemoryService(cubes, Redactor(config.governance.redaction), embed)
        chat = ChatService(config, cubes, runtime.adapters, embed, usage, memories)
        return cls(
            config=config,
            directory=runtime.directory,
            embedder=runtime.embedder,
            identity=runtime.identity,
            audit=runtime.audit,
            adapters=runtime.adapters,
            memscheduler=runtime.memscheduler,
            idempotency=runtime.idempotency,
            embed=embed,
            cubes=cubes,
            memories=memories,
            chat=chat,
            bundles=BundleService(config, cubes, runtime.adapters, embed, memories.redactor, chat.scheduler),
        )


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


Svc = Depends(services)
