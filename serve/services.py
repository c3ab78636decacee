"""What the routes stand on: one :class:`Services` per replica, reached through a dependency.

The handles live here once (not also on the deployment), and routes name what they need in their
signature (``svc: Services = Svc``), so a router is testable with any app that sets
``app.state.services``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fastapi import Depends, Request
from ray.actor import ActorHandle

from actors.calls import call
from actors.chat import ChatService
from actors.cubes import Cubes
from actors.embedder import Embedder
from actors.runtime import ensure_runtime
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
    cubes: Cubes
    chat: ChatService
    redactor: Redactor

    @classmethod
    def start(cls, config: MemosConfig) -> Services:
        runtime = ensure_runtime(config, wait=False)
        cubes = Cubes(runtime.directory)
        services = cls(
            config=config,
            directory=runtime.directory,
            embedder=runtime.embedder,
            identity=runtime.identity,
            audit=runtime.audit,
            adapters=runtime.adapters,
            cubes=cubes,
            chat=None,  # type: ignore[arg-type]  # set below: it embeds through this object
            redactor=Redactor(config.governance.redaction),
        )
        services.chat = ChatService(config, cubes, runtime.adapters, services.embed)
        return services

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await call(self.embedder, Embedder.embed, texts)


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


Svc = Depends(services)
