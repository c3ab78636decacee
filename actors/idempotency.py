"""The Idempotency actor: the one owner of the idempotency keys (``memos_ray/governance/idempotency.py``).

Every Serve replica asks it before running a mutating request that carries an ``Idempotency-Key``, so a
retry is recognised whichever replica receives it. Its store commits each reservation before answering:
a replica that dies after reserving leaves a reservation that expires, never a lost one.
"""

from __future__ import annotations

import asyncio

from actors.calls import actor_class
from memos_ray.config import MemosConfig
from memos_ray.governance.idempotency import Claim, IdempotencyStore

IDEMPOTENCY_NAME = "memos_idempotency"


class Idempotency:
    def __init__(self, config: MemosConfig) -> None:
        storage, serve = config.storage, config.serve
        self.store = IdempotencyStore(
            storage.data_dir / "idempotency.sqlite",
            storage.database_uri,
            serve.idempotency_ttl_s,
            serve.idempotency_lease_s,
        )

    def ready(self) -> bool:
        return True

    async def claim(self, scope: str, key: str, fingerprint: str) -> Claim:
        return await asyncio.to_thread(self.store.claim, scope, key, fingerprint)

    async def finish(self, scope: str, key: str, status: int, media_type: str, body: bytes) -> None:
        await asyncio.to_thread(self.store.finish, scope, key, status, media_type, body)

    async def release(self, scope: str, key: str) -> None:
        await asyncio.to_thread(self.store.release, scope, key)


IdempotencyActor = actor_class(Idempotency, max_restarts=-1, max_task_retries=0, max_concurrency=64)


__all__ = ["IDEMPOTENCY_NAME", "Idempotency", "IdempotencyActor"]
