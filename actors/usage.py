"""Usage off the request path: each ingress process gathers what searches and chats used and tells the
MemScheduler in batches (fire-and-forget, one message per ``FLUSH_S``). A crashed ingress loses the last
fraction of a second of statistics, never a memory; a request never waits for them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from ray.actor import ActorHandle

from actors.calls import tell
from actors.memscheduler import MemScheduler
from memos_ray.types import MemoryItem, UsageEvent, utcnow

log = logging.getLogger(__name__)
FLUSH_S = 0.25
MAX_BUFFER = 10_000  # beyond this (the MemScheduler unreachable for long) the oldest events are dropped


class UsageRecorder:
    def __init__(self, memscheduler: Callable[[], ActorHandle | None]) -> None:
        self._memscheduler = memscheduler
        self._events: list[UsageEvent] = []
        self._flush: asyncio.TimerHandle | None = None

    def searched(self, agent: str, hits: Sequence[MemoryItem]) -> None:
        by_cube: dict[str, list[str]] = {}
        for m in hits:
            by_cube.setdefault(m.cube_id, []).append(m.id)
        now = utcnow()
        self.add([UsageEvent(cube_id=c, agent=agent, at=now, retrieved=ids) for c, ids in by_cube.items()])

    def chatted(
        self,
        agent: str,
        cube_ids: Sequence[str],
        retrieved: Sequence[MemoryItem],
        in_prompt: Sequence[MemoryItem],
        from_cache: Sequence[MemoryItem],
    ) -> None:
        """One event per cube of the chat (each had a chat), with what of its memories went where."""
        now = utcnow()

        def of(cube_id: str, items: Sequence[MemoryItem]) -> list[str]:
            return [m.id for m in items if m.cube_id == cube_id]

        self.add(
            [
                UsageEvent(
                    cube_id=c,
                    agent=agent,
                    at=now,
                    chat=True,
                    retrieved=of(c, retrieved),
                    prompt=of(c, in_prompt),
                    prefix=of(c, from_cache),
                )
                for c in dict.fromkeys(cube_ids)
            ]
        )

    def add(self, events: list[UsageEvent]) -> None:
        if not events:
            return
        self._events.extend(events)
        del self._events[:-MAX_BUFFER]
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        self._flush = None
        handle = self._memscheduler()
        if handle is None or not self._events:
            return
        batch, self._events = self._events, []
        with contextlib.suppress(Exception):  # statistics: never the request's failure
            tell(handle, MemScheduler.record, batch)


__all__ = ["UsageRecorder"]
