"""Principals, API keys and the authenticated caller."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from memos_ray.types.base import (
    Id,
    Strict,
    UtcDatetime,
)


class PrincipalKind(StrEnum):
    user = "user"
    agent = "agent"
    team = "team"


class Principal(Strict):
    id: str
    kind: PrincipalKind
    parent: str | None = Field(None, description="an agent's user or team")
    teams: list[str] = Field(default_factory=list, description="teams this user or agent is a member of")
    admin: bool = Field(False, description="system administrator: manages identities, may act on every cube")
    disabled: bool = False
    created_at: datetime
    created_by: str


class PrincipalCreate(Strict):
    id: Id
    kind: PrincipalKind = PrincipalKind.user
    parent: Id | None = Field(None, description="required for an agent: the user or team it belongs to")
    teams: list[Id] = Field(default_factory=list, max_length=64)
    admin: bool = False


class PrincipalUpdate(Strict):
    teams: list[Id] | None = Field(None, max_length=64)
    disabled: bool | None = None


class ApiKeyInfo(Strict):
    """What is stored and listed about a key (never the key)."""

    key_id: str
    principal: str
    label: str = ""
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyCreate(Strict):
    principal: Id
    label: str = Field("", max_length=128)
    expires_at: UtcDatetime | None = None


class IssuedKey(Strict):
    """The answer to issuing a key: the only time the key itself is shown."""

    key: str
    info: ApiKeyInfo


class Caller(Strict):
    """An authenticated request's principal, as the Directory and the audit log see it."""

    principal: str
    kind: PrincipalKind
    subjects: list[str] = Field(description="the principal, its owner, and their teams: whom a grant may name")
    admin: bool = False
    key_id: str
