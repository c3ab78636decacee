"""Plaintext memory on the wire and on disk: memory versions, writes, search, the change feed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from memos_ray.types.base import (
    MAX_BATCH,
    MAX_CONTEXT_CHARS,
    MAX_SEARCH_CUBES,
    MAX_TAGS,
    MAX_TEXT_CHARS,
    Id,
    KVMode,
    MemoryRef,
    MetaKey,
    MetaValue,
    Strict,
    Tag,
    Text,
    UtcDatetime,
    _not_blank,
    utcnow,
)


class MemoryKind(StrEnum):
    fact = "fact"
    dialogue = "dialogue"
    document = "document"
    preference = "preference"
    event = "event"
    note = "note"


class LifecycleState(StrEnum):
    """Where a memory is in its life. Only ``active`` memories are searched by default; every other state keeps
    the memory (and its id) readable, and all but ``deleted`` can be restored (``PATCH state: active``)."""

    active = "active"
    archived = "archived"  # unused for the cube's archive period (or by hand): out of default search
    expired = "expired"  # its kind's time to live passed since it was last written
    merged = "merged"  # a near-duplicate of ``merged_into``, which now stands for it
    superseded = "superseded"  # replaced by ``superseded_by``: the old fact, kept in history with its validity
    deleted = "deleted"


RESTORABLE = (LifecycleState.archived, LifecycleState.expired, LifecycleState.merged, LifecycleState.superseded)


class SourceType(StrEnum):
    api = "api"
    message = "message"
    import_ = "import"
    document = "document"
    derived = "derived"


class Provenance(Strict):
    """Where a memory came from. Kept on every version."""

    author: str = Field("local", description="principal that wrote this version")
    source_type: SourceType = SourceType.api
    source_id: str | None = Field(None, max_length=256, description="message id, file name, dia_id...")
    conversation_id: str | None = Field(None, max_length=256)
    speaker: str | None = Field(None, max_length=128)
    role: str | None = Field(None, max_length=32)
    derived_from: list[MemoryRef] = Field(
        default_factory=list, description="the memories this one was made from (a chat answer: those it used)"
    )
    redactions: dict[str, int] = Field(
        default_factory=dict, description="what redaction on ingest masked in this version: detector -> count"
    )


class MemoryItem(Strict):
    """One version of a plaintext memory, as stored and as returned."""

    id: str
    cube_id: str
    version: int = Field(ge=1)
    seq: int = Field(0, ge=0, description="the cube's change sequence number when this version was written")
    text: str
    context: str | None = Field(
        None, description="what it was said after (the preceding message); searched, not part of the memory"
    )
    kind: MemoryKind = MemoryKind.fact
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, MetaValue] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=Provenance)
    said_at: datetime | None = Field(None, description="when it was said or happened")
    created_at: datetime = Field(description="when the first version was stored")
    updated_at: datetime = Field(description="when this version was stored")
    state: LifecycleState = LifecycleState.active
    valid_from: datetime | None = Field(None, description="since when the fact holds (None: always)")
    valid_to: datetime | None = Field(None, description="until when it held (None: still); set by supersession")
    supersedes: list[str] = Field(default_factory=list, description="the memories this one replaced")
    superseded_by: str | None = None
    merged_into: str | None = Field(None, description="the memory that stands for this near-duplicate")
    merged_from: list[MemoryRef] = Field(
        default_factory=list, description="the near-duplicates merged into this one (their versions stay readable)"
    )

    @property
    def ref(self) -> MemoryRef:
        return MemoryRef(memory_id=self.id, version=self.version)


class SourceIn(Strict):
    source_type: SourceType = SourceType.api
    source_id: str | None = Field(None, max_length=256)
    conversation_id: str | None = Field(None, max_length=256)
    speaker: str | None = Field(None, max_length=128)
    role: str | None = Field(None, max_length=32)
    derived_from: list[MemoryRef] = Field(default_factory=list, max_length=64)


class _Validity(Strict):
    valid_from: UtcDatetime | None = None
    valid_to: UtcDatetime | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _Validity:
        if self.valid_from is not None and self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to must not be earlier than valid_from")
        return self


class MemoryCreate(_Validity):
    text: Text
    context: str | None = Field(
        None, max_length=MAX_CONTEXT_CHARS, description="the preceding message, for keyword search"
    )
    kind: MemoryKind = MemoryKind.fact
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    metadata: dict[MetaKey, MetaValue] = Field(default_factory=dict, max_length=64)
    said_at: UtcDatetime | None = None
    source: SourceIn = Field(default_factory=SourceIn)
    supersedes: list[Id] = Field(
        default_factory=list,
        max_length=64,
        description="memories of this cube this one replaces: they leave default search, their validity closes",
    )


class MemoryBatchCreate(Strict):
    items: list[MemoryCreate] = Field(min_length=1, max_length=MAX_BATCH)


class MemoryUpdate(_Validity):
    """A partial update: absent fields keep their value. Makes a new version. ``state: active`` restores an
    archived, expired, merged or superseded memory (a merged one leaves the memory it was merged into)."""

    text: Text | None = None
    kind: MemoryKind | None = None
    tags: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    metadata: dict[MetaKey, MetaValue] | None = Field(None, max_length=64)
    said_at: UtcDatetime | None = None
    state: Literal[LifecycleState.active, LifecycleState.archived] | None = None
    supersedes: list[Id] | None = Field(None, max_length=64, description="memories this one now replaces")
    expected_version: int | None = Field(None, ge=1, description="409 when the current version differs")


class ChatMessage(Strict):
    role: Literal["user", "assistant", "system", "tool"] = "user"
    content: Annotated[str, Field(min_length=1, max_length=1_000_000), AfterValidator(_not_blank)]
    speaker: str | None = Field(None, max_length=128)
    timestamp: UtcDatetime | None = None
    id: str | None = Field(None, max_length=256)


class MessagesCreate(Strict):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_BATCH)
    kind: MemoryKind = MemoryKind.dialogue
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    conversation_id: str | None = Field(None, max_length=256)
    max_chunk_chars: int = Field(1_000, ge=100, le=MAX_TEXT_CHARS)
    context: str | None = Field(
        None,
        max_length=MAX_CONTEXT_CHARS,
        description="the message before the first one, when a conversation arrives in parts",
    )


class SearchFilter(Strict):
    tags_any: list[Tag] = Field(default_factory=list)
    tags_all: list[Tag] = Field(default_factory=list)
    kinds: list[MemoryKind] = Field(default_factory=list)
    states: list[LifecycleState] | None = Field(
        None, description="None: active memories (with as_of, superseded ones too: what held then)"
    )
    said_after: UtcDatetime | None = None
    said_before: UtcDatetime | None = None
    speakers: list[str] = Field(default_factory=list)
    as_of: UtcDatetime | None = Field(
        None,
        description="only facts valid at this time (valid_from <= as_of < valid_to); unless states are given, "
        "superseded memories are searched too: what held then",
    )

    def searched_states(self) -> list[LifecycleState]:
        if self.states is not None:
            return list(self.states)
        if self.as_of is not None:
            return [LifecycleState.active, LifecycleState.superseded]
        return [LifecycleState.active]


class TimePreference(Strict):
    """Favour memories said near ``anchor`` (default: now): score *= (1-w) + w * 2^(-|dt|/half_life)."""

    anchor: UtcDatetime | None = None
    half_life_days: float = Field(30.0, gt=0)
    weight: float = Field(0.3, ge=0, le=1)


class SearchQuery(Strict):
    """What one cube's search runs (the embedding travels beside it)."""

    query: str = Field(min_length=1, max_length=4_096)
    top_k: int = Field(10, ge=1, le=200)
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    filter: SearchFilter = Field(default_factory=SearchFilter)
    prefer_time: TimePreference | None = None


class SearchRequest(SearchQuery):
    cube_ids: list[Id] | None = Field(
        None,
        min_length=1,
        max_length=MAX_SEARCH_CUBES,
        description="the cubes to search; None: every cube the caller may read (the most recently updated 64)",
    )


class SearchHit(Strict):
    memory: MemoryItem
    score: float
    dense_score: float | None = None
    bm25_score: float | None = None


class SearchResponse(Strict):
    hits: list[SearchHit]
    took_ms: float
    cube_ids: list[str] = Field(default_factory=list, description="the cubes searched")


class ChangeOp(StrEnum):
    add = "add"
    update = "update"
    delete = "delete"
    purge = "purge"


class ChangeEvent(Strict):
    """One change to a cube, in the order of its ``seq``: what a change feed subscriber receives."""

    seq: int
    cube_id: str
    op: ChangeOp
    memory_id: str
    version: int | None = None
    author: str | None = None
    at: datetime
    memory: MemoryItem | None = Field(None, description="the new version (None for a purge)")


class ChangeBatch(Strict):
    events: list[ChangeEvent]
    seq: int = Field(description="the cube's seq when the batch was taken: resume after it")


class Recall(Strict):
    """One cube's part of a chat: its pinned memories, its working set (the memories the MemScheduler keeps
    as a KV prefix; empty until it has picked one) and the hits for the question."""

    pinned: list[MemoryItem]
    working: list[MemoryItem] = Field(default_factory=list)
    hits: list[SearchHit]
    kv_mode: KVMode | None = None  # the cube's default (CubeMeta.kv_mode)


MemoryChangeKind = Literal["edited", "deleted", "purged"]


class PendingCascade(Strict):
    """A change whose consequences outside the cube (KV caches, adapters) are not all done yet: kept on
    disk by the cube's actor and retried until they are."""

    memory_ids: list[str]
    what: MemoryChangeKind
    since: datetime = Field(default_factory=utcnow)
    attempts: int = 0
    error: str | None = None


class MemoryList(Strict):
    items: list[MemoryItem]
    total: int
    offset: int
    limit: int


class AddResult(Strict):
    items: list[MemoryRef]
    duplicates: list[int] = Field(
        default_factory=list,
        description="positions of items that matched an existing memory (ingest dedup): their ref is that memory's",
    )


class Added(Strict):
    """What a cube's add returns: the memories, in the order asked (an existing one where ingest dedup matched)."""

    items: list[MemoryItem]
    duplicates: list[int] = Field(default_factory=list)


class Purged(Strict):
    """What a purge erased: the memory asked for, the near-duplicates merged with it and the memories made
    from any of them (a remembered chat answer that used it); and the memories whose context quoted it."""

    memory_ids: list[str]
    scrubbed: list[str] = Field(default_factory=list, description="memories whose context held the erased text")
