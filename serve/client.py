"""Typed Python SDK for the memos-ray HTTP API: :class:`MemosClient` and :class:`AsyncMemosClient`.

    with MemosClient("http://127.0.0.1:8000") as mc:
        mc.create_cube("alice")
        mc.add("alice", "Alice moved to Lisbon in 2021", tags=["home"])
        best = mc.search("alice", "where does Alice live?", top_k=3).hits[0].memory.text

Both clients have the same methods, made once from the request builders of :class:`_Calls`:
a builder validates its arguments through the pydantic request models (a bad call raises
``pydantic.ValidationError`` before any I/O) and returns a :class:`Call` saying what to
send and how to read the answer. A non-2xx answer raises :class:`MemosAPIError`; transport
failures raise httpx's own errors (``httpx.TransportError``).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Concatenate, Literal, ParamSpec, Self, TypeVar

import httpx
from pydantic import TypeAdapter

from memos_ray.models import (
    AddResult,
    ChangeEvent,
    ChatMessage,
    CubeCreate,
    CubeList,
    CubeMeta,
    CubeQuotas,
    LifecycleState,
    MemoryBatchCreate,
    MemoryCreate,
    MemoryItem,
    MemoryKind,
    MemoryList,
    MemoryUpdate,
    MessagesCreate,
    MetaValue,
    SearchFilter,
    SearchQuery,
    SearchRequest,
    SearchResponse,
    SourceIn,
    TimePreference,
)
from serve._request import (
    Call,
    Json,
    MemosAPIError,
    Params,
    as_json,
    body_of,
    given,
    no_content,
    parse_answer,
    seg,
)
from serve.client_adapters import AdapterCalls
from serve.client_governance import GovernanceCalls

DEFAULT_URL = "http://127.0.0.1:8000"

T = TypeVar("T")
P = ParamSpec("P")


_history = TypeAdapter(list[MemoryItem]).validate_python


class _Calls:
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
    ) -> Call[CubeMeta]:
        """Create a cube (the server makes an id when none is given); 409 ``cube_exists`` if taken."""
        body = body_of(CubeCreate, given(id=id, name=name or None, description=description or None, quotas=quotas))
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
    ) -> Call[MemoryItem]:
        """Add one memory; returns its first version."""
        fields = given(text=text, kind=kind, tags=tags, metadata=metadata, said_at=said_at, source=source)
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
        expected_version: int | None = None,
    ) -> Call[MemoryItem]:
        """Partial update (None = keep the value) making a new version; 409 if ``expected_version`` differs."""
        fields = given(text=text, tags=tags, kind=kind, metadata=metadata, said_at=said_at, state=state)
        fields.update(given(expected_version=expected_version))
        path = f"/v1/cubes/{seg(cube_id)}/memories/{seg(memory_id)}"
        return Call("PATCH", path, MemoryItem.model_validate, json=body_of(MemoryUpdate, fields))

    @staticmethod
    def delete(cube_id: str, memory_id: str, expected_version: int | None = None) -> Call[MemoryItem]:
        """Soft delete: returns the new version, in state ``deleted``."""
        params: Params = [] if expected_version is None else [("expected_version", expected_version)]
        path = f"/v1/cubes/{seg(cube_id)}/memories/{seg(memory_id)}"
        return Call("DELETE", path, MemoryItem.model_validate, params)

    @staticmethod
    def purge(cube_id: str, memory_id: str) -> Call[None]:
        """Remove every version of a memory (irreversible)."""
        return Call("POST", f"/v1/cubes/{seg(cube_id)}/memories/{seg(memory_id)}/purge", no_content)

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
        """Search one cube (a str) or several (a list: hits merged by score)."""
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


def _like(method: Callable[..., Any], build: Callable[..., Any]) -> None:
    """Give a client method the builder's name, docs and signature (with ``self``) for help() and IDEs."""
    functools.update_wrapper(method, build, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    sig = inspect.signature(build)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    returns = str(sig.return_annotation).removeprefix("Call[").removesuffix("]")  # "Call[X]" -> "X"
    sig = sig.replace(parameters=[self_param, *sig.parameters.values()], return_annotation=returns)
    method.__signature__ = sig  # type: ignore[attr-defined]


def _sync(build: Callable[P, Call[T]]) -> Callable[Concatenate[MemosClient, P], T]:
    def method(self: MemosClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(*args, **kwargs))

    _like(method, build)
    return method


def _async(build: Callable[P, Call[T]]) -> Callable[Concatenate[AsyncMemosClient, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncMemosClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(*args, **kwargs))

    _like(method, build)
    return method


def _headers(headers: Mapping[str, str] | None, api_key: str | None) -> dict[str, str]:
    merged = dict(headers or {})
    key = api_key or os.environ.get("MEMOS_RAY_API_KEY")
    if key and not any(h.lower() in ("authorization", "x-api-key") for h in merged):
        merged["Authorization"] = f"Bearer {key}"
    return merged


def _changes(cube_id: str, after_seq: int | None) -> tuple[str, Params]:
    return f"/v1/cubes/{seg(cube_id)}/changes", [] if after_seq is None else [("after_seq", after_seq)]


class _ChangeStream:
    """Reads a change feed line by line: an SSE event ends at a blank line. Shared by both clients."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def feed(self, line: str) -> ChangeEvent | None:
        """The ChangeEvent this line completes, if any (other events are skipped); an error event raises."""
        if line:
            self.lines.append(line)
            return None
        lines, self.lines = self.lines, []
        kind = next((x[6:].strip() for x in lines if x.startswith("event:")), "message")
        data = "\n".join(x[5:].strip() for x in lines if x.startswith("data:"))
        if kind == "error":
            err = json.loads(data)["error"]
            raise MemosAPIError(0, err["code"], err["message"], err.get("details"))
        return ChangeEvent.model_validate_json(data) if kind == "change" else None


class MemosClient:
    """Blocking client. Every method maps to one route; see :class:`_Calls` for the arguments."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float | httpx.Timeout = 60.0,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        """``api_key``: defaults to ``$MEMOS_RAY_API_KEY``; sent as ``Authorization: Bearer``."""
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, transport=transport, headers=_headers(headers, api_key)
        )

    def _send(self, call: Call[T]) -> T:
        return parse_answer(call, self._http.request(call.method, call.path, params=call.params, json=call.json))

    def close(self) -> None:
        self._http.close()

    def watch(self, cube_id: str, after_seq: int | None = None) -> Iterator[ChangeEvent]:
        """A cube's change feed (SSE): yields each change as it happens, until the stream ends or is closed.
        ``after_seq`` replays the changes after it first."""
        path, params = _changes(cube_id, after_seq)
        with self._http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as resp:
            if not resp.is_success:
                resp.read()
                parse_answer(Call("GET", path, no_content), resp)
            stream = _ChangeStream()
            for line in resp.iter_lines():
                if (event := stream.feed(line)) is not None:
                    yield event

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    health = _sync(_Calls.health)
    status = _sync(_Calls.status)
    create_cube = _sync(_Calls.create_cube)
    get_cube = _sync(_Calls.get_cube)
    list_cubes = _sync(_Calls.list_cubes)
    delete_cube = _sync(_Calls.delete_cube)
    add = _sync(_Calls.add)
    add_batch = _sync(_Calls.add_batch)
    add_messages = _sync(_Calls.add_messages)
    get = _sync(_Calls.get)
    update = _sync(_Calls.update)
    delete = _sync(_Calls.delete)
    purge = _sync(_Calls.purge)
    history = _sync(_Calls.history)
    search = _sync(_Calls.search)
    list = _sync(_Calls.list)
    whoami = _sync(GovernanceCalls.whoami)
    create_principal = _sync(GovernanceCalls.create_principal)
    list_principals = _sync(GovernanceCalls.list_principals)
    update_principal = _sync(GovernanceCalls.update_principal)
    issue_key = _sync(GovernanceCalls.issue_key)
    list_keys = _sync(GovernanceCalls.list_keys)
    revoke_key = _sync(GovernanceCalls.revoke_key)
    update_cube = _sync(GovernanceCalls.update_cube)
    share = _sync(GovernanceCalls.share)
    unshare = _sync(GovernanceCalls.unshare)
    audit = _sync(GovernanceCalls.audit)
    verify_audit = _sync(GovernanceCalls.verify_audit)
    train_adapter = _sync(AdapterCalls.train_adapter)
    training_job = _sync(AdapterCalls.training_job)
    adapters = _sync(AdapterCalls.adapters)
    activate_adapter = _sync(AdapterCalls.activate_adapter)
    delete_adapter = _sync(AdapterCalls.delete_adapter)


class AsyncMemosClient:
    """The same methods as :class:`MemosClient`, as coroutines."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float | httpx.Timeout = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, headers=_headers(headers, api_key)
        )

    async def _send(self, call: Call[T]) -> T:
        return parse_answer(call, await self._http.request(call.method, call.path, params=call.params, json=call.json))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def watch(self, cube_id: str, after_seq: int | None = None) -> AsyncIterator[ChangeEvent]:
        """As :meth:`MemosClient.watch`, as an async iterator."""
        path, params = _changes(cube_id, after_seq)
        async with self._http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as resp:
            if not resp.is_success:
                await resp.aread()
                parse_answer(Call("GET", path, no_content), resp)
            stream = _ChangeStream()
            async for line in resp.aiter_lines():
                if (event := stream.feed(line)) is not None:
                    yield event

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    health = _async(_Calls.health)
    status = _async(_Calls.status)
    create_cube = _async(_Calls.create_cube)
    get_cube = _async(_Calls.get_cube)
    list_cubes = _async(_Calls.list_cubes)
    delete_cube = _async(_Calls.delete_cube)
    add = _async(_Calls.add)
    add_batch = _async(_Calls.add_batch)
    add_messages = _async(_Calls.add_messages)
    get = _async(_Calls.get)
    update = _async(_Calls.update)
    delete = _async(_Calls.delete)
    purge = _async(_Calls.purge)
    history = _async(_Calls.history)
    search = _async(_Calls.search)
    list = _async(_Calls.list)
    whoami = _async(GovernanceCalls.whoami)
    create_principal = _async(GovernanceCalls.create_principal)
    list_principals = _async(GovernanceCalls.list_principals)
    update_principal = _async(GovernanceCalls.update_principal)
    issue_key = _async(GovernanceCalls.issue_key)
    list_keys = _async(GovernanceCalls.list_keys)
    revoke_key = _async(GovernanceCalls.revoke_key)
    update_cube = _async(GovernanceCalls.update_cube)
    share = _async(GovernanceCalls.share)
    unshare = _async(GovernanceCalls.unshare)
    audit = _async(GovernanceCalls.audit)
    verify_audit = _async(GovernanceCalls.verify_audit)
    train_adapter = _async(AdapterCalls.train_adapter)
    training_job = _async(AdapterCalls.training_job)
    adapters = _async(AdapterCalls.adapters)
    activate_adapter = _async(AdapterCalls.activate_adapter)
    delete_adapter = _async(AdapterCalls.delete_adapter)


__all__ = ["DEFAULT_URL", "AsyncMemosClient", "MemosAPIError", "MemosClient"]
