"""What a change to memories must reach outside their cube, owned by the actor layer so that no entry
point (REST, MCP, a batch import, the scheduler) can skip it:

- an edit, delete or purge: the KV caches built from the memory are dropped on every worker, and the
  adapters that learned it are marked stale; a purge also takes those adapters out of use;
- a deleted cube: its adapters go from disk and from every worker, with the caches computed under them;
- a purge or a deleted cube: its usage statistics go from the MemScheduler.

The cube's actor runs the first after its write is durable (``actors/cube.py``), through its outbox
(:class:`memos_ray.plaintext.outbox.CascadeOutbox`): a cascade that fails is kept and retried, and a
purge answers only once its cascade is done. The Directory runs the second.
"""

from __future__ import annotations

from actors.adapters import ADAPTERS_NAME, Adapters
from actors.calls import NamedActors, call
from actors.scheduler import SCHEDULER_NAME, Scheduler
from memos_ray.types import MemoryChangeKind


class Cascade:
    def __init__(self, namespace: str) -> None:
        self.actors = NamedActors(namespace)  # one never started is None (no Scheduler: no cache to drop)

    async def memories_changed(self, cube_id: str, memory_ids: list[str], what: MemoryChangeKind) -> None:
        """Raises when a part could not be done: the caller keeps the change and tries again (both parts are
        idempotent). Handles are looked up again after a failure: the actor may have been replaced."""
        try:
            adapters = self.actors.get(ADAPTERS_NAME)
            if adapters is not None:
                await call(adapters, Adapters.memory_changed, cube_id, memory_ids, what)
            scheduler = self.actors.get(SCHEDULER_NAME)
            if scheduler is not None:
                await call(scheduler, Scheduler.invalidate, memory_ids)
            if what == "purged":  # erased: its usage goes too
                await self._forget_usage(cube_id, memory_ids)
        except Exception:
            self.actors.forget()
            raise

    async def cube_deleted(self, cube_id: str) -> None:
        """Its adapters, from disk and from every worker (the Adapters actor unloads them)."""
        adapters = self.actors.get(ADAPTERS_NAME)
        if adapters is not None:
            await call(adapters, Adapters.drop_cube, cube_id)
        await self._forget_usage(cube_id, None)

    async def _forget_usage(self, cube_id: str, memory_ids: list[str] | None) -> None:
        # imported here: the MemScheduler works through cube actors, which run this cascade
        from actors.memscheduler import MEMSCHEDULER_NAME, MemScheduler

        memscheduler = self.actors.get(MEMSCHEDULER_NAME)
        if memscheduler is not None:
            await call(memscheduler, MemScheduler.forget, cube_id, memory_ids)


__all__ = ["Cascade"]
