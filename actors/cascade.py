"""What a change to memories must reach outside their cube, owned by the actor layer so that no entry
point (REST, MCP, a batch import, the scheduler) can skip it:

- an edit, delete or purge (or a lifecycle move: a memory that left default search): the KV caches built
  from the memory are dropped on every worker, and the adapters that learned it are marked stale; a purge
  withdraws those adapters instead (deleted from disk and every worker), and the MemScheduler trains the
  cube's active one again without the erased memories;
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
from memos_ray.types import AdapterChange, MemoryChangeKind


class Cascade:
    def __init__(self, namespace: str) -> None:
        self.actors = NamedActors(namespace)  # one never started is None (no Scheduler: no cache to drop)

    async def memories_changed(self, cube_id: str, memory_ids: list[str], what: MemoryChangeKind) -> None:
        """Raises when a part could not be done: the caller keeps the change and tries again (every part is
        idempotent). Handles are looked up again after a failure: the actor may have been replaced."""
        try:
            scheduler = self.actors.get(SCHEDULER_NAME)
            if scheduler is not None:
                await call(scheduler, Scheduler.invalidate, memory_ids)
            adapters = self.actors.get(ADAPTERS_NAME)
            change = AdapterChange()
            if adapters is not None:
                change = await call(adapters, Adapters.memory_changed, cube_id, memory_ids, what)
            if what == "purged":  # erased: its usage goes too, and the policy retrains what was withdrawn
                await self._forget(cube_id, memory_ids, change)
        except Exception:
            self.actors.forget()
            raise

    async def cube_deleted(self, cube_id: str) -> None:
        """Its adapters, from disk and from every worker (the Adapters actor unloads them)."""
        adapters = self.actors.get(ADAPTERS_NAME)
        if adapters is not None:
            await call(adapters, Adapters.drop_cube, cube_id)
        await self._forget(cube_id, None, AdapterChange())

    async def _forget(self, cube_id: str, memory_ids: list[str] | None, change: AdapterChange) -> None:
        # imported here: the MemScheduler works through cube actors, which run this cascade
        from actors.memscheduler import MEMSCHEDULER_NAME, MemScheduler

        memscheduler = self.actors.get(MEMSCHEDULER_NAME)
        if memscheduler is not None:
            await call(memscheduler, MemScheduler.forget, cube_id, memory_ids, change)


__all__ = ["Cascade"]
