"""Typed Python SDK for the memos-ray HTTP API: :class:`MemosClient` and :class:`AsyncMemosClient`.

    with MemosClient("http://127.0.0.1:8000") as mc:
        mc.create_cube("alice")
        mc.add("alice", "Alice moved to Lisbon in 2021", tags=["home"])
        best = mc.search("alice", "where does Alice live?", top_k=3).hits[0].memory.text

Both clients have the same methods, made once from the request builders of :class:`_Calls`:
a builder validates its arguments through the pydantic request models (a bad call raises
``pydantic.ValidationError`` before any I/O) and returns a :class:`_Call` saying what to
send and how to read the answer. A non-2xx answer raises :class:`MemosAPIError`; transport
failures raise httpx's own errors (``httpx.TransportError``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Concatenate, Generic, Literal, ParamSpec, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from memos_ray.errors import MemosError
from memos_ray.models import (
    AddResult,
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

DEFAULT_URL = "http://127.0.0.1:8000"

T = TypeVar("T")
P = ParamSpec("P")
Json = dict[str, Any]
Params = list[tuple[str, str | int | float | bool | None]]


class MemosAPIError(MemosError):
    """A non-2xx answer: ``status_code`` plus the server's ``{"error": {code, message, details}}``."""

    def __init__(self, status_code: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.status_code = status_code
        self.code = code

    def __str__(self) -> str:
        return f"{self.status_code} {self.code}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (e.g. across Ray) despite the wider __init__
        return (type(self), (self.status_code, self.code, self.message, self.details))


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request: method, path, query params and JSON body, and how to read a 2xx answer's JSON."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Params | None = None
    json: Any = None


def _parse(call: _Call[T], resp: httpx.Response) -> T:
    """The one response reader: 2xx -> ``call.parse(json or None)``; anything else -> MemosAPIError."""
    if not resp.is_success:
        try:
            err = resp.json()["error"]
            exc = MemosAPIError(resp.status_code, str(err["code"]), str(err["message"]), dict(err.get("details") or {}))
        except (ValueError, KeyError, TypeError, AttributeError):
            exc = MemosAPIError(resp.status_code, "http_error", resp.text[:500] or resp.reason_phrase)
        raise exc
    return call.parse(resp.json() if resp.content else None)


def _seg(value: str) -> str:
    return quote(value, safe="")


def _given(**fields: Any) -> Json:
    """The arguments actually given (None means 'leave out'), so ``exclude_unset`` omits the rest."""
    return {k: v for k, v in fields.items() if v is not None}


def _body(model: type[BaseModel], data: Json) -> Json:
    return model.model_validate(data).model_dump(mode="json", exclude_unset=True)


def _none(_: Any) -> None:
    return None


def _dict(data: Any) -> Json:
    return dict(data)


_history = TypeAdapter(list[MemoryItem]).validate_python


class _Calls:
    """Request builders, one per route of ``serve/app.py``; the clients' methods wrap these."""

    @staticmethod
    def health() -> _Call[Json]:
        """GET /v1/health: ``{"status", "version"}``."""
        return _Call("GET", "/v1/health", _dict)

    @staticmethod
    def status() -> _Call[Json]:
        """GET /v1/status: version plus directory and embedder stats."""
        return _Call("GET", "/v1/status", _dict)

    @staticmethod
    def create_cube(
        id: str | None = None,
        *,
        name: str = "",
        description: str = "",
        quotas: CubeQuotas | Mapping[str, int | None] | None = None,
    ) -> _Call[CubeMeta]:
        """Create a cube (the server makes an id when none is given); 409 ``cube_exists`` if taken."""
        body = _body(CubeCreate, _given(id=id, name=name or None, description=description or None, quotas=quotas))
        return _Call("POST", "/v1/cubes", CubeMeta.model_validate, json=body)

    @staticmethod
    def get_cube(cube_id: str) -> _Call[CubeMeta]:
        return _Call("GET", f"/v1/cubes/{_seg(cube_id)}", CubeMeta.model_validate)

    @staticmethod
    def list_cubes(offset: int = 0, limit: int = 100) -> _Call[CubeList]:
        return _Call("GET", "/v1/cubes", CubeList.model_validate, params=[("offset", offset), ("limit", limit)])

    @staticmethod
    def delete_cube(cube_id: str) -> _Call[None]:
        return _Call("DELETE", f"/v1/cubes/{_seg(cube_id)}", _none)

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
    ) -> _Call[MemoryItem]:
        """Add one memory; returns its first version."""
        fields = _given(text=text, kind=kind, tags=tags, metadata=metadata, said_at=said_at, source=source)
        body = _body(MemoryCreate, fields)
        return _Call("POST", f"/v1/cubes/{_seg(cube_id)}/memories", MemoryItem.model_validate, json=body)

    @staticmethod
    def add_batch(cube_id: str, items: Sequence[MemoryCreate | Mapping[str, Any]]) -> _Call[AddResult]:
        """Add up to 1000 memories in one request (one embedding batch)."""
        body = _body(MemoryBatchCreate, {"items": list(items)})
        return _Call("POST", f"/v1/cubes/{_seg(cube_id)}/memories/batch", AddResult.model_validate, json=body)

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
    ) -> _Call[AddResult]:
        """Add chat messages through the MemReader (one memory per message, or per chunk of a long one).

        ``context``: the message before the first one, when a conversation is sent in parts
        (``memos_ray.reader.context_of(previous_message)``).
        """
        fields = _given(
            conversation_id=conversation_id, kind=kind, tags=tags, max_chunk_chars=max_chunk_chars, context=context
        )
        body = _body(MessagesCreate, {**fields, "messages": list(messages)})
        return _Call("POST", f"/v1/cubes/{_seg(cube_id)}/messages", AddResult.model_validate, json=body)

    @staticmethod
    def get(cube_id: str, memory_id: str, version: int | None = None) -> _Call[MemoryItem]:
        """The latest version of a memory, or ``version``."""
        params: Params = [] if version is None else [("version", version)]
        return _Call("GET", f"/v1/cubes/{_seg(cube_id)}/memories/{_seg(memory_id)}", MemoryItem.model_validate, params)

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
    ) -> _Call[MemoryItem]:
        """Partial update (None = keep the value) making a new version; 409 if ``expected_version`` differs."""
        fields = _given(text=text, tags=tags, kind=kind, metadata=metadata, said_at=said_at, state=state)
        fields.update(_given(expected_version=expected_version))
        path = f"/v1/cubes/{_seg(cube_id)}/memories/{_seg(memory_id)}"
        return _Call("PATCH", path, MemoryItem.model_validate, json=_body(MemoryUpdate, fields))

    @staticmethod
    def delete(cube_id: str, memory_id: str, expected_version: int | None = None) -> _Call[MemoryItem]:
        """Soft delete: returns the new version, in state ``deleted``."""
        params: Params = [] if expected_version is None else [("expected_version", expected_version)]
        path = f"/v1/cubes/{_seg(cube_id)}/memories/{_seg(memory_id)}"
        return _Call("DELETE", path, MemoryItem.model_validate, params)

    @staticmethod
    def purge(cube_id: str, memory_id: str) -> _Call[None]:
        """Remove every version of a memory (irreversible)."""
        return _Call("POST", f"/v1/cubes/{_seg(cube_id)}/memories/{_seg(memory_id)}/purge", _none)

    @staticmethod
    def history(cube_id: str, memory_id: str) -> _Call[list[MemoryItem]]:
        """Every stored version of a memory, oldest first."""
        return _Call("GET", f"/v1/cubes/{_seg(cube_id)}/memories/{_seg(memory_id)}/history", _history)

    @staticmethod
    def search(
        cube_id_or_ids: str | Sequence[str],
        query: str,
        *,
        top_k: int = 10,
        mode: Literal["hybrid", "dense", "bm25"] = "hybrid",
        filter: SearchFilter | Mapping[str, Any] | None = None,
        prefer_time: TimePreference | Mapping[str, Any] | None = None,
    ) -> _Call[SearchResponse]:
        """Search one cube (a str) or several (a list: hits merged by score)."""
        fields = _given(query=query, top_k=top_k, mode=mode, filter=filter, prefer_time=prefer_time)
        if isinstance(cube_id_or_ids, str):
            path, body = f"/v1/cubes/{_seg(cube_id_or_ids)}/search", _body(SearchQuery, fields)
        else:
            path, body = "/v1/search", _body(SearchRequest, {**fields, "cube_ids": list(cube_id_or_ids)})
        return _Call("POST", path, SearchResponse.model_validate, json=body)

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
    ) -> _Call[MemoryList]:
        """A page of latest versions; ``states`` defaults to active only (server side)."""
        params: Params = [("offset", offset), ("limit", limit)]
        params += [("state", LifecycleState(s).value) for s in states or ()]
        params += [("kind", MemoryKind(k).value) for k in kinds or ()]
        params += [] if tag is None else [("tag", tag)]
        return _Call("GET", f"/v1/cubes/{_seg(cube_id)}/memories", MemoryList.model_validate, params)


def _like(method: Callable[..., Any], build: Callable[..., Any]) -> None:
    """Give a client method the builder's name, docs and signature (with ``self``) for help() and IDEs."""
    functools.update_wrapper(method, build, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    sig = inspect.signature(build)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    returns = str(sig.return_annotation).removeprefix("_Call[").removesuffix("]")  # "_Call[X]" -> "X"
    sig = sig.replace(parameters=[self_param, *sig.parameters.values()], return_annotation=returns)
    method.__signature__ = sig  # type: ignore[attr-defined]


def _sync(build: Callable[P, _Call[T]]) -> Callable[Concatenate[MemosClient, P], T]:
    def method(self: MemosClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(*args, **kwargs))

    _like(method, build)
    return method


def _async(build: Callable[P, _Call[T]]) -> Callable[Concatenate[AsyncMemosClient, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncMemosClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(*args, **kwargs))

    _like(method, build)
    return method


class MemosClient:
    """Blocking client. Every method maps to one route; see :class:`_Calls` for the arguments."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float | httpx.Timeout = 60.0,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport, headers=headers)

    def _send(self, call: _Call[T]) -> T:
        return _parse(call, self._http.request(call.method, call.path, params=call.params, json=call.json))

    def close(self) -> None:
        self._http.close()

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


class AsyncMemosClient:
    """The same methods as :class:`MemosClient`, as coroutines."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float | httpx.Timeout = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport, headers=headers)

    async def _send(self, call: _Call[T]) -> T:
        return _parse(call, await self._http.request(call.method, call.path, params=call.params, json=call.json))

    async def aclose(self) -> None:
        await self._http.aclose()

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


__all__ = ["DEFAULT_URL", "AsyncMemosClient", "MemosAPIError", "MemosClient"]
