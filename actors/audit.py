"""The AuditLog actor: the single writer of the append-only audit log.

Appends from every Serve replica arrive here. Concurrent appends are grouped into one
SQLite transaction (one fsync), committed off the event loop, and each caller is answered
only after its records are durable.
"""

from __future__ import annotations

import asyncio

from actors import metrics
from actors.calls import actor_class
from memos_ray.config import MemosConfig
from memos_ray.governance.audit import AuditStore
from memos_ray.types import AuditEvent, AuditPage, AuditQuery, AuditVerification

AUDIT_NAME = "memos_audit"


class AuditLog:
    def __init__(self, config: MemosConfig) -> None:
        data = config.storage.data_dir
        key_file = config.governance.audit_key_file or data / "audit.key"
        self.store = AuditStore(data / "audit.db", key_file, config.storage.database_uri)
        self.flush_s = config.governance.audit_flush_ms / 1000
        self._pending: list[tuple[list[AuditEvent], asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def ready(self) -> int:
        return self.store.seq

    async def append(self, events: list[AuditEvent]) -> int:
        """Durable when this returns; the sequence number of the last record."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((events, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            if self.flush_s:
                await asyncio.sleep(self.flush_s)  # let concurrent appends join this commit
            batch, self._pending = self._pending, []
            try:
                records = await asyncio.to_thread(self.store.append, [e for events, _ in batch for e in events])
            except Exception as exc:
                for _, future in batch:
                    future.set_exception(exc)
                continue
            last = records[-1].seq if records else self.store.seq
            metrics.count("memos_audit_appends_total", len(records))
            for _, future in batch:
                future.set_result(last)

    async def query(self, q: AuditQuery) -> AuditPage:
        return await asyncio.to_thread(self.store.query, q)

    async def verify(self) -> AuditVerification:
        return await asyncio.to_thread(self.store.verify)


AuditLogActor = actor_class(AuditLog, max_restarts=-1, max_concurrency=1000)
