"""A cube's metadata, quotas and grants, and the requests that change them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from memos_ray.types.base import (
    Id,
    KVMode,
    Role,
    Strict,
)
from memos_ray.types.memory import MemoryKind


class Grant(Strict):
    principal: Id = Field(description="a user, agent or team")
    role: Role


class CubeQuotas(Strict):
    max_memories: int | None = Field(None, ge=1)
    max_bytes: int | None = Field(None, ge=1)


class LifecyclePolicy(Strict):
    """How a cube's memories age and consolidate; applied by the MemScheduler's sweep (and, for ``dedup``, on
    ingest). Every move writes a new version: ids never change and never vanish. Absent: off."""

    ttl_s: dict[MemoryKind, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="per kind: a memory expires this long after it was last written"
    )
    archive_after_s: float | None = Field(
        None, gt=0, description="an active memory unused (retrieved, or in a chat) this long is archived"
    )
    archive_below_salience: float | None = Field(
        None,
        gt=0,
        description="archive only what says little: an unused memory is archived when its salience is below "
        "this (the summed BM25 idf of its words in this cube, in units of a word no other memory has: small talk "
        "is about 1-2, a stated fact 3 or more); None: any unused memory",
    )
    merge_threshold: float | None = Field(
        None,
        ge=0.5,
        le=1.0,
        description="near-duplicates (same kind and speaker, cosine at least this) merge into the oldest",
    )
    dedup_threshold: float | None = Field(
        None,
        ge=0.5,
        le=1.0,
        description="on ingest, a memory this close to an active one of its kind and speaker is not stored again: "
        "the add returns the existing id",
    )

    @property
    def sweeps(self) -> bool:
        """Whether the sweep has anything to do for this policy."""
        return bool(self.ttl_s) or self.archive_after_s is not None or self.merge_threshold is not None


class CubeMeta(Strict):
    id: str
    name: str = ""
    description: str = ""
    owner: str = "local"
    grants: list[Grant] = Field(default_factory=list)
    quotas: CubeQuotas = Field(default_factory=CubeQuotas)
    lifecycle: LifecyclePolicy | None = Field(None, description="None: the server's default (scheduler.lifecycle)")
    kv_mode: KVMode | None = Field(
        None, description="how activation memory serves this cube's chats that do not say; None: llm.kv_mode"
    )
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
    lifecycle: LifecyclePolicy | None = None


class CubeUpdate(Strict):
    """Change a cube's descriptive fields or quotas (admin role). Absent fields keep their value."""

    name: str | None = Field(None, max_length=256)
    description: str | None = Field(None, max_length=4096)
    quotas: CubeQuotas | None = None
    lifecycle: LifecyclePolicy | None = Field(None, description="replaces the cube's lifecycle policy whole")
    kv_mode: KVMode | Literal["default"] | None = Field(
        None, description="the cube's default KV mode for chats (off, prefix, compose); default: the server's"
    )


class CubeList(Strict):
    cubes: list[CubeMeta]
    total: int


class GrantRole(Strict):
    role: Role


class Released(Strict):
    """What a cube actor reports when it passivates its cube: the cube's final counters, what the emptied
    process still holds (USS, MiB) and how many cubes it has hosted."""

    meta: CubeMeta
    footprint_mib: float
    lives: int
    cascades_pending: bool = False  # its outbox still holds something: the Directory starts it again for it
