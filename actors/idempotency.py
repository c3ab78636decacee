"""The Idempotency actor: the one owner of the idempotency keys (``memos_ray/governance/idempotency.py``).

Every Serve replica asks it before running a mutating request that carries an ``Idempotency-Key``, so a
retry is recognised whichever replica receives it. Its store commits each reservation before answering:
a replica that dies after reserving leaves a reservation, never a lost one. It remembers which replica (a
named actor) holds each reservation it granted: a retry that finds the holder gone from Ray (its node lost;
Serve's proxy answered the client a 500) runs at once, rather than meeting 409s until the lease runs out.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import ray

from actors.calls import actor_class
from memos_ray.config import MemosConfig
from memos_ray.governance.idempotency import Claim, IdempotencyStore

IDEMPOTENCY_NAME = "memos_idempotency"
HOLDERS_KEPT = 10_000  # reservations whose holder is remembered (older ones fall back to the lease)


def _alive(holder: str) -> bool:
    """Whether a live actor has the name ``holder`` (in any namespace: a Serve replica's is Serve's)."""
    return any(a["name"] == holder for a in ray.util.list_named_actors(all_namespaces=True))


class Idempotency:
    def __init__(self, config: MemosConfig) -> None:
        storage, serve = config.storage, config.serve
        self.store = IdempotencyStore(
            storage.data_dir / "idempotency.sqlite",
            storage.database_uri,
            serve.idempotency_ttl_s,
            serve.idempotency_lease_s,
        )
        self._holders: OrderedDict[tuple[str, str], str] = OrderedDict()  # (scope, key) -> its replica's name

    def ready(self) -> bool:
        return True

    async def claim(self, scope: str, key: str, fingerprint: str, holder: str | None = None) -> Claim:
        """Reserve ``key`` for ``holder`` (the replica running the request), or say why not."""
        claim = await asyncio.to_thread(self.store.claim, scope, key, fingerprint)
        held_by = self._holders.get((scope, key))
        if claim.outcome == "in_flight" and held_by is not None and not await asyncio.to_thread(_alive, held_by):
            claim = await asyncio.to_thread(self.store.claim, scope, key, fingerprint, None, claim.started)
        if claim.outcome == "run":
            self._holders.pop((scope, key), None)
            if holder is not None:
                self._holders[(scope, key)] = holder
                if len(self._holders) > HOLDERS_KEPT:
                    self._holders.popitem(last=False)
        return claim

    async def finish(self, scope: str, key: str, status: int, media_type: str, body: bytes) -> None:
        self._holders.pop((scope, key), None)
        await asyncio.to_thread(self.store.finish, scope, key, status, media_type, body)

    async def release(self, scope: str, key: str) -> None:
        self._holders.pop((scope, key), None)
        await asyncio.to_thread(self.store.release, scope, key)


IdempotencyActor = actor_class(Idempotency, max_restarts=-1, max_task_retries=0, max_concurrency=64)


__all__ = ["IDEMPOTENCY_NAME", "Idempotency", "IdempotencyActor"]
