"""The one error tree of memos-ray, shared by the server and the SDK.

Every failure the system reports on purpose is a :class:`MemosError`. :data:`HTTP_STATUS` maps
the classes to status codes in one table, which the HTTP layer (``serve/errors.py``) answers
with; actors raise them and Ray carries them to the caller unchanged (plain ``message`` +
``details`` args, so they survive Ray's exception transport). The SDK raises the same classes
(:func:`from_answer`), so ``except CubeNotFound`` works on both sides of the wire; every error
carries ``status_code``, ``code``, ``message`` and ``details``.

    MemosError
    ├── BadRequest              a body that is not JSON, a malformed header        (400)
    ├── InvalidInput            bad field values                                   (422)
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
    ├── Unavailable             storage or an actor could not be reached in time    (503)
    └── Internal                a bug: anything not raised on purpose              (500)
"""

from __future__ import annotations

from typing import Any


class MemosError(Exception):
    """Base of every error memos-ray raises on purpose."""

    code: str = "error"
    answered: bool = False  # raised by the SDK from a server's answer: str() then names status and code
    denial: bool = False  # a refused access (who tried is audited even for a read)

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details or {})
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.status_code = status_of(type(self))

    def __str__(self) -> str:
        return f"{self.status_code} {self.code}: {self.message}" if self.answered else self.message


class BadRequest(MemosError):
    code = "bad_request"


class InvalidInput(MemosError):
    code = "invalid_input"


class Unauthenticated(MemosError):
    code = "unauthenticated"
    denial = True


class Forbidden(MemosError):
    """The caller holds a role on the cube, but not the one the action needs. A caller with no role
    at all gets :class:`CubeNotFound` instead, so a cube's existence is not revealed across tenants."""

    code = "forbidden"
    denial = True


class NotFound(MemosError):
    code = "not_found"


class CubeNotFound(NotFound):
    code = "cube_not_found"
    denial = True


class MemoryNotFound(NotFound):
    code = "memory_not_found"
    denial = True  # audited even for a read: asking a cube for another cube's memory ids leaves a trail


class PrincipalNotFound(NotFound):
    code = "principal_not_found"
    denial = True


class KeyNotFound(NotFound):
    code = "key_not_found"
    denial = True


class JobNotFound(NotFound):
    code = "job_not_found"
    denial = True


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


class Internal(MemosError):
    code = "internal"


HTTP_STATUS: dict[type[MemosError], int] = {
    BadRequest: 400,
    InvalidInput: 422,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    QuotaExceeded: 429,
    Unavailable: 503,
    Internal: 500,
}
"""The one table from the error tree to HTTP status codes (a class answers with its nearest listed base)."""


def status_of(cls: type[MemosError]) -> int:
    for base in cls.__mro__:
        if base in HTTP_STATUS:
            return HTTP_STATUS[base]  # type: ignore[index]
    return 500


def _classes(root: type[MemosError]) -> list[type[MemosError]]:
    return [root, *(c for sub in root.__subclasses__() for c in _classes(sub))]


_BY_CODE = {cls.code: cls for cls in _classes(MemosError)}
_BY_STATUS = {status: cls for cls, status in HTTP_STATUS.items()}


def is_denial(code: str) -> bool:
    """Whether an error code says access was refused (rather than that something failed)."""
    cls = _BY_CODE.get(code)
    return cls is not None and cls.denial


def from_answer(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> MemosError:
    """The error a server's answer names: its class by ``code`` (by status when the code is not one of
    the tree's, e.g. ``malformed_json``), keeping the server's code, status and details."""
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, MemosError)
    exc = cls(message, details)
    exc.code = code
    exc.status_code = status or exc.status_code  # 0: not known (an error event inside a stream)
    exc.answered = True
    return exc


__all__ = [
    "HTTP_STATUS",
    "BadRequest",
    "Conflict",
    "CubeExists",
    "CubeNotFound",
    "Forbidden",
    "Internal",
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
    "from_answer",
    "is_denial",
    "status_of",
]
