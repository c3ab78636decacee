"""A cube's metadata, quotas and grants, and the requests that change them."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from memos_ray.types.base import (
    Id,
    Role,
    Strict,
)


class Grant(Strict):
    principal: Id = Field(description="a user, agent or team")
    role: Role


class CubeQuotas(Strict):
    max_memories: int | None = Field(None, ge=1)
    max_bytes: int | None = Field(None, ge=1)


class CubeMeta(Strict):
    id: str
    name: str = ""
    description: str = ""
    owner: str = "local"
    grants: list[Grant] = Field(default_factory=list)
    quotas: CubeQuotas = Field(default_factory=CubeQuotas)
    created_at: datetime
    updated_at: datetime
    seq: int = Field(0, description="cube version counter: +1 per change")
    memory_count: int = Field(0, description="memories not deleted")
    text_bytes: int = 0


class CubeCreate(Strict):
    id: Id | None = Field(None, description="generated when absent")
    name: str = Field("", max_length=256)
    description: str = Field("", max_length=4096)
    quotas: CubeQuotas = Field(default_factory=CubeQuotas)


class CubeUpdate(Strict):
    """Change a cube's descriptive fields or quotas (admin role). Absent fields keep their value."""

    name: str | None = Field(None, max_length=256)
    description: str | None = Field(None, max_length=4096)
    quotas: CubeQuotas | None = None


class CubeList(Strict):
    cubes: list[CubeMeta]
    total: int


class GrantRole(Strict):
    role: Role
