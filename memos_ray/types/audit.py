"""The audit log's records, queries and verification."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from memos_ray.types.base import (
    Strict,
    UtcDatetime,
    utcnow,
)

Result = Literal["ok", "denied", "error"]


class AuditAction(StrEnum):
    """What a request or job did, as the audit log records it (``action`` keeps old records' strings)."""

    request = "request"  # before a route was matched
    docs = "docs"
    status = "status"
    cube_create = "cube.create"
    cube_read = "cube.read"
    cube_update = "cube.update"
    cube_delete = "cube.delete"
    cube_share = "cube.share"
    cube_unshare = "cube.unshare"
    memory_add = "memory.add"
    memory_read = "memory.read"
    memory_update = "memory.update"
    memory_delete = "memory.delete"
    memory_purge = "memory.purge"
    memory_redact = "memory.redact"
    search = "search"
    chat = "chat"
    changes = "changes"
    audit_read = "audit.read"
    identity_read = "identity.read"
    principal_create = "principal.create"
    principal_update = "principal.update"
    key_issue = "key.issue"
    key_revoke = "key.revoke"
    adapter_read = "adapter.read"
    adapter_train = "adapter.train"
    adapter_activate = "adapter.activate"
    adapter_delete = "adapter.delete"
    adapter_ready = "adapter.ready"
    adapter_failed = "adapter.failed"
    session_open = "session.open"
    scheduler_read = "scheduler.read"
    scheduler_update = "scheduler.update"
    bundle_export = "bundle.export"
    bundle_import = "bundle.import"
    bundle_key = "bundle.key"

    @property
    def reads(self) -> bool:
        """Only reads: a failure is recorded only when access was denied."""
        return self in _READS


_READS = frozenset(
    {
        AuditAction.docs,
        AuditAction.status,
        AuditAction.cube_read,
        AuditAction.memory_read,
        AuditAction.search,
        AuditAction.chat,
        AuditAction.changes,
        AuditAction.audit_read,
        AuditAction.identity_read,
        AuditAction.adapter_read,
        AuditAction.scheduler_read,
        AuditAction.bundle_export,  # a full read: its success is recorded by its route, a failure only when denied
        AuditAction.bundle_key,
    }
)


class AuditEvent(Strict):
    """What happened, as the ingress reports it."""

    at: datetime = Field(default_factory=utcnow)
    principal: str | None = Field(None, description="None when the caller could not be authenticated")
    key_id: str | None = None
    action: str = Field(description="e.g. memory.add, cube.share, key.revoke, access")
    result: Result = "ok"
    status: int = 200
    cube_id: str | None = None
    memory_id: str | None = None
    method: str = ""
    path: str = ""
    request_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class AuditRecord(AuditEvent):
    seq: int
    prev_hash: str
    hash: str


class AuditFilter(Strict):
    """What a cube's audit log is filtered by (the cube is the path's)."""

    principal: str | None = None
    action: str | None = Field(None, description="exact action, or a prefix ending in '.' (memory.)")
    result: Result | None = None
    memory_id: str | None = None
    request_id: str | None = None
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    after_seq: int = Field(0, ge=0, description="page: records after this sequence number")
    limit: int = Field(100, ge=1, le=1_000)


class AuditQuery(AuditFilter):
    cube_id: str | None = None


class AuditPage(Strict):
    records: list[AuditRecord]
    next_after_seq: int | None = Field(None, description="pass as after_seq for the next page; None at the end")


class AuditVerification(Strict):
    ok: bool
    records: int
    first_bad_seq: int | None = None
