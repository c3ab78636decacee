"""Ids, times and the base model every schema type derives from."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

# Ids are used as actor names and file names: a strict alphabet, no dots or slashes.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


_ID_RE = re.compile(ID_PATTERN)


MAX_TEXT_CHARS = 16_000


MAX_TAGS = 32


MAX_BATCH = 1_000


MAX_CONTEXT_CHARS = 2_000


MAX_SEARCH_CUBES = 64


KVMode = Literal["off", "prefix", "compose"]
"""How activation memory serves a chat: a cached prefix, blocks composed per memory, or no KV."""


def _check_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(
            f"invalid id {value!r}: 1-64 characters of letters, digits, '_' or '-', starting with a letter or digit"
        )
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("text is blank")
    return value


# the message is _check_id's (clearer than a pattern mismatch); the schema still declares the pattern
Id = Annotated[
    str,
    AfterValidator(_check_id),
    WithJsonSchema({"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 64}),
]


Tag = Annotated[str, Field(min_length=1, max_length=64)]


MetaKey = Annotated[str, Field(min_length=1, max_length=64)]


MetaValue = Annotated[str, Field(max_length=1_024)] | int | float | bool | None


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_not_blank)]


_last_id = [0, 0]  # (milliseconds, random part) of the last id this process made
_id_lock = threading.Lock()


def new_memory_id() -> str:
    """Time-ordered, collision-resistant id: 12 hex digits of milliseconds + 10 of a random part. Monotonic in a
    process (as ULIDs are): within one millisecond the random part counts up, so a batch's ids sort in the order
    it was written, and so do the memories of a prefix that were written together."""
    with _id_lock:
        ms = int(time.time() * 1000)
        if ms <= _last_id[0]:
            ms, rnd = _last_id[0], _last_id[1] + 1
        else:
            rnd = secrets.randbits(39)  # below half the range: counting up never overflows 10 hex digits
        _last_id[:] = [ms, rnd]
    return f"m{ms:012x}{rnd:010x}"


def keyed_memory_ids(seed: str, at: float, n: int) -> list[str]:
    """The ids of the ``n`` memories a keyed request adds (an ``Idempotency-Key``'s scope and key in ``seed``,
    ``at`` when it was first made): the same on every retry, so a cube that already committed them knows the
    retry for a repeat. Time-ordered like :func:`new_memory_id`, and in the request's order."""
    ms = int(at * 1000)
    return [f"m{ms:012x}{i:04x}{hashlib.sha256(f'{seed}|{i}'.encode()).hexdigest()[:10]}" for i in range(n)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC, so every stored time is comparable."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_NUMBER = re.compile(r"^\s*[+-]?\d+(\.\d*)?\s*$")


def _not_a_number(value: object) -> object:
    """pydantic reads a number as seconds since 1970; the API's schema says an ISO 8601 string."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("expected an ISO 8601 date-time such as 2026-12-01T10:00:00Z, not a number")
    return value


UtcDatetime = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(as_utc)]
"""A datetime stored in UTC; a naive one is taken as UTC. Written as ISO 8601, never as a number."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Role(StrEnum):
    read = "read"
    write = "write"
    admin = "admin"


class MemoryRef(Strict):
    """One version of one memory: what a derived artefact records as its source."""

    memory_id: str
    version: int
