"""The one error tree of memos-ray.

Every failure the system reports on purpose is a :class:`MemosError`. The HTTP layer
(``serve/errors.py``) maps these classes to status codes in one table; actors raise them
and Ray carries them to the caller unchanged (plain ``message`` + ``details`` args, so
they survive Ray's exception transport).

    MemosError
    ├── InvalidInput            bad field values that pydantic alone cannot judge  (422)
    ├── Unauthenticated         no API key, or an unknown, revoked or expired one   (401)
    ├── Forbidden               the caller may see the cube but lacks the role      (403)
    ├── NotFound                                                                   (404)
    │   ├── CubeNotFound
    │   ├── MemoryNotFound
    │   ├── PrincipalNotFound   also what a caller is told about a principal it may not manage
    │   ├── KeyNotFound         ... and about another principal's key
    │   └── JobNotFound         ... and about a training job on a cube it may not read
    ├── Conflict                                                                   (409)
    │   ├── CubeExists
    │   └── VersionConflict     optimistic concurrency: expected version differs
    ├── PayloadTooLarge         request or text over the configured limits          (413)
    ├── QuotaExceeded           a cube's memory or byte quota                       (429)
    └── Unavailable             storage or an actor could not be reached in time    (503)
"""

from __future__ import annotations

from typing import Any


class MemosError(Exception):
    """Base of every error memos-ray raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details or {})
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(MemosError):
    code = "invalid_input"


class Unauthenticated(MemosError):
    code = "unauthenticated"


class Forbidden(MemosError):
    """The caller holds a role on the cube, but not the one the action needs. A caller with no role
    at all gets :class:`CubeNotFound` instead, so a cube's existence is not revealed across tenants."""

    code = "forbidden"


class NotFound(MemosError):
    code = "not_found"


class CubeNotFound(NotFound):
    code = "cube_not_found"


class MemoryNotFound(NotFound):
    code = "memory_not_found"


class PrincipalNotFound(NotFound):
    code = "principal_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class Conflict(MemosError):
    code = "conflict"


class CubeExists(Conflict):
    code = "cube_exists"


class VersionConflict(Conflict):
    code = "version_conflict"


class PayloadTooLarge(MemosError):
    code = "payload_too_large"


class QuotaExceeded(MemosError):
    code = "quota_exceeded"


class Unavailable(MemosError):
    code = "unavailable"


__all__ = [
    "Conflict",
    "CubeExists",
    "CubeNotFound",
    "Forbidden",
    "InvalidInput",
    "JobNotFound",
    "KeyNotFound",
    "MemoryNotFound",
    "MemosError",
    "NotFound",
    "PayloadTooLarge",
    "PrincipalNotFound",
    "QuotaExceeded",
    "Unauthenticated",
    "Unavailable",
    "VersionConflict",
]
