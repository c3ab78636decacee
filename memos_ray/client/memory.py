"""Request builders for cubes, memories and search, used by both SDK clients (``memos_ray.client.clients``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import TypeAdapter

from memos_ray.client._request import Call, Json, Params, as_json, body_of, given, no_content, seg
from memos_ray.types import (
    AddResult,
    ChatMessage,
    CubeCreate,
    CubeList,
    CubeMeta,
    CubeQuotas,
    LifecyclePolicy,
    LifecycleState,
    MemoryBatchCreate,
    MemoryCreate,
    MemoryItem,
    MemoryKind,
    MemoryList,
    MemoryUpdate,
    MessagesCreate,
    MetaValue,
    Purged,
    SearchFilter,
    SearchQuery,
    SearchRequest,
    SearchResponse,
    SourceIn,
    TimePreference,
)

_history = TypeAdapter(list[MemoryItem]).validate_python


class MemoryCalls:
    """Request builders, one per route of ``serve/app.py``; the clients' methods wrap these."""

    @staticmethod
    def health() -> Call[Json]:
        """GET /v1/health: ``{"status", "version"}``."""
        return Call("GET", "/v1/health", as_json)

    @staticmethod
    def status() -> Call[Json]:
        """GET /v1/status: version plus directory and embedder stats."""
        return Call("GET", "/v1/status", as_json)

    @staticmethod
    def create_cube(
        id: str | None = None,
        *,
        name: str = "",
        description: str = "",
        quotas: CubeQuotas | Mapping[str, int | None] | None = None,
        lifecycle: LifecyclePolicy | Mapping[str, Any] | None = None,
    ) -> Call[CubeMeta]:
        """Create a cube (the server makes an id when none is given); 409 ``cube_exists`` if taken.
        ``lifecycle``: how its memories age and consolidate (None: the server's default)."""
        fields = given(id=id, name=name or None, description=description or None, quotas=quotas, lifecycle=lifecycle)
        body = body_of(CubeCreate, fields)
        return Call("POST", "/v1/cubes", CubeMeta.model_validate, json=body)

    @staticmethod
    def get_cube(cube_id: str) -> Call[CubeMeta]:
        return Call("GET", f"/v1/cubes/{seg(cube_id)}", CubeMeta.model_validate)

    @staticmethod
    def list_cubes(offset: int = 0, limit: int = 100) -> Call[CubeList]:
        return Call("GET", "/v1/cubes", CubeList.model_validate, params=[("offset", offset), ("limit", limit)])

    @staticmethod
    def delete_cube(cube_id: str) -> Call[None]:
        return Call("DELETE", f"/v1/cubes/{seg(cube_id)}", no_content)

    @staticmethod
    def add(
        cube_id: str,
        text: str,
        *,
        kind: MemoryKind | str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, MetaValue] | None = None,
        said_at: datetime | None = None,
        source: SourceIn | Mapping[str, Any] | None = None,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
        supersedes: Sequence[str] | None = None,
    ) -> Call[MemoryItem]:
        """Add one memory; returns its first version, or the memory the cube already holds when its ingest
        dedup matched (200 instead of 201). ``supersedes``: ids of this cube's memories it replaces (they leave
        default search, their validity closes); ``valid_from`` / ``valid_to``: when the fact holds."""
        fields = given(text=text, kind=kind, tags=tags, metadata=metadata, said_at=said_at, source=source)
        fields.update(given(valid_from=valid_from, valid_to=valid_to, supersedes=supersedes))
        body = body_of(MemoryCreate, fields)
        return Call("POST", f"/v1/cubes/{seg(cube_id)}/memories", MemoryItem.model_validate, json=body)

    @staticmethod
    def add_batch(cube_id: str, items: Sequence[MemoryCreate | Mapping[str, Any]]) -> Call[AddResult]:
        """Add up to 1000 memories in one request (one embedding batch)."""
        body = body_of(MemoryBatchCreate, {"items": list(items)})
        return Call("POST", f"/v1/cubes/{seg(cube_id)}/memories/batch", AddResult.model_validate, json=body)

    @staticmethod
    def add_messages(
        cube_id: str,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        *,
        conversation_id: str | None = None,
        kind: MemoryKind | str | None = None,
        tags: Sequence[str] | None = None,
        max_chunk_chars: int | None = None,
        context: str | None = None,
    ) -> Call[AddResult]:
        """Add chat messages through the MemReader (one memory per message, or per chunk of a long one).

        ``context``: the message before the first one, when a conversation is sent in parts
        (``memos_ray.reader.context_of(previous_message)``).
        """
        fields = given(
            conversation_id=conversation_id, kind=kind, tags=tags, max_chunk_chars=max_chunk_chars, context=context
        )
        body = body_of(MessagesCreate, {**fields, "messages": list(messages)})
        return Call("POST", f"/v1/cubes/{seg(cube_id)}/messages", AddResult.model_validate, json=body)

    @staticmethod
    def get(cube_id: str, memory_id: str, version: int | None = None) -> Call[MemoryItem]:
        """The latest version of a memory, or ``version``."""
        params: Params = [] if version is None else [("version", version)]
        return Call("GET", f"/v1/cubes/{seg(cube_id)}/memories/{seg(memory_id)}", MemoryItem.model_validate, params)

    @staticmethod
    def update(
        cube_id: str,
        memory_id: str,
        *,
        text: str | None = None,
        tags: Sequence[str] | None = None,
        kind: MemoryKind | str | None = None,
        metadata: Mapping[str, MetaValue] | None = None,
        said_at: datetime | None = None,
        state: LifecycleState | str | None = None,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
        supersedes: Sequence[str] | None = None,
        expected_version: int | None = None,
    ) -> Call[MemoryItem]:
        """Partial update (None = keep the value) making a new version; 409 if ``expected_version`` differs.
        ``state``: ``active`` (restore) or ``archived`` only."""
        fields = given(text=text, tags=tags, kind=kind, metadata=metadata, said_at=said_at, state=state)
        fields.update(given(valid_from=valid_from, valid_to=valid_to, supersedes=supersedes))
        fields.update(given(expected_version=expected_version))
        path = f"/v1/cubes/{seg(cube_id)}/memories/{seg(memory_id)}"
        return Call("PATCH", path, MemoryItem.model_validate, json=body_of(MemoryUpdate, fields))

    @staticmethod
    def restore(cube_id: str, memory_id: str) -> Call[MemoryItem]:
        """Make an archived, expired, merged or superseded memory active again (a new version)."""
        return MemoryCalls.update(cube_id, memory_id, state=LifecycleState.active)

    @staticmethod
    def archive(cube_id: str, memory_id: str) -> Call[MemoryItem]:
        """Take a memory out of default search, keeping it readable and restorable (a new version)."""
        return MemoryCalls.update(cube_id, memory_id, state=LifecycleState.archived)

    @staticmethod
    def delete(cube_id: str, memory_id: str, expected_version: int | None = None) -> Call[MemoryItem]:
        """Soft delete: returns the new version, in state ``deleted``."""
        params: Params = [] if expected_version is None else [("expected_version", expected_version)]
        path = f"/v1/cubes/{seg(cube_id)}/memories/{seg(memory_id)}"
        return Call("DELETE", path, MemoryItem.model_validate, params)

    @staticmethod
    def purge(cube_id: str, memory_id: str) -> Call[Purged]:
        """Erase every version of a memory (irreversible; admin role), with its near-duplicates and the memories
        made from it; returns what was erased, and the memories whose context quoted it (scrubbed)."""
        return Call("POST", f"/v1/cubes/{seg(cube_id)}/memories/{seg(memory_id)}/purge", Purged.model_validate)

    @staticmethod
    def history(cube_id: str, memory_id: str) -> Call[list[MemoryItem]]:
        """Every stored version of a memory, oldest first."""
        return Call("GET", f"/v1/cubes/{seg(cube_id)}/memories/{seg(memory_id)}/history", _history)

    @staticmethod
    def search(
        cube_id_or_ids: str | Sequence[str],
        query: str,
        *,
        top_k: int = 10,
        mode: Literal["hybrid", "dense", "bm25"] = "hybrid",
        filter: SearchFilter | Mapping[str, Any] | None = None,
        prefer_time: TimePreference | Mapping[str, Any] | None = None,
    ) -> Call[SearchResponse]:
        """Search one cube (a str) or several (a list: hits merged by score). ``filter={"as_of": t}``: the facts
        valid at ``t`` (superseded ones included, unless ``states`` is given)."""
        fields = given(query=query, top_k=top_k, mode=mode, filter=filter, prefer_time=prefer_time)
        if isinstance(cube_id_or_ids, str):
            path, body = f"/v1/cubes/{seg(cube_id_or_ids)}/search", body_of(SearchQuery, fields)
        else:
            path, body = "/v1/search", body_of(SearchRequest, {**fields, "cube_ids": list(cube_id_or_ids)})
        return Call("POST", path, SearchResponse.model_validate, json=body)

    # last: inside this class body, the name ``list`` is this builder from here on
    @staticmethod
    def list(
        cube_id: str,
        offset: int = 0,
        limit: int = 50,
        *,
        states: Sequence[LifecycleState | str] | None = None,
        kinds: Sequence[MemoryKind | str] | None = None,
        tag: str | None = None,
    ) -> Call[MemoryList]:
        """A page of latest versions; ``states`` defaults to active only (server side)."""
        params: Params = [("offset", offset), ("limit", limit)]
        params += [("state", LifecycleState(s).value) for s in states or ()]
        params += [("kind", MemoryKind(k).value) for k in kinds or ()]
        params += [] if tag is None else [("tag", tag)]
        return Call("GET", f"/v1/cubes/{seg(cube_id)}/memories", MemoryList.model_validate, params)
