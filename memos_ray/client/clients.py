"""Typed Python SDK for the memos-ray HTTP API: :class:`MemosClient` and :class:`AsyncMemosClient`.

    with MemosClient("http://127.0.0.1:8000") as mc:
        mc.create_cube("alice")
        mc.add("alice", "Alice moved to Lisbon in 2021", tags=["home"])
        best = mc.search("alice", "where does Alice live?", top_k=3).hits[0].memory.text

Both clients have the same methods, made once from the request builders of :class:`MemoryCalls`:
a builder validates its arguments through the pydantic request models (a bad call raises
``pydantic.ValidationError`` before any I/O) and returns a :class:`Call` saying what to
send and how to read the answer. A non-2xx answer raises the server's error class from
:mod:`memos_ray.errors` (``CubeNotFound``, ``VersionConflict``, ...) with its status and details; transport
failures raise httpx's own errors (``httpx.TransportError``).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar

import httpx

from memos_ray.client._request import (
    Call,
    Params,
    no_content,
    parse_answer,
    seg,
)
from memos_ray.client.adapters import AdapterCalls
from memos_ray.client.bundles import BundleCalls
from memos_ray.client.chat import ChatCalls
from memos_ray.client.governance import GovernanceCalls
from memos_ray.client.memory import MemoryCalls
from memos_ray.client.scheduler import SchedulerCalls
from memos_ray.errors import from_answer
from memos_ray.types import ChangeEvent, ChatResponse

DEFAULT_URL = "http://127.0.0.1:8000"

T = TypeVar("T")
P = ParamSpec("P")


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


class _Events(Generic[T]):
    """Reads server-sent events line by line (an event ends at a blank line); ``parse(kind, data)`` turns one
    into what the stream yields, or None to skip it. Shared by both clients' change feeds and chats."""

    def __init__(self, parse: Callable[[str, str], T | None]) -> None:
        self.lines: list[str] = []
        self.parse = parse

    def feed(self, line: str) -> T | None:
        if line:
            self.lines.append(line)
            return None
        lines, self.lines = self.lines, []
        kind = next((x[6:].strip() for x in lines if x.startswith("event:")), "message")
        data = "\n".join(x[5:].strip() for x in lines if x.startswith("data:"))
        if kind == "error":
            err = json.loads(data)["error"]
            raise from_answer(int(err.get("status", 0)), err["code"], err["message"], err.get("details"))
        return self.parse(kind, data)


def _change(kind: str, data: str) -> ChangeEvent | None:
    return ChangeEvent.model_validate_json(data) if kind == "change" else None


def _chat_piece(kind: str, data: str) -> str | ChatResponse | None:
    if kind == "token":
        return str(json.loads(data)["text"])
    return ChatResponse.model_validate_json(data) if kind == "done" else None


class MemosClient:
    """Blocking client. Every method maps to one route; see :class:`MemoryCalls` for the arguments."""

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
        return parse_answer(call, self._http.request(**call.request()))

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
            stream: _Events[ChangeEvent] = _Events(_change)
            for line in resp.iter_lines():
                if (event := stream.feed(line)) is not None:
                    yield event

    def chat_stream(self, *args: Any, **kwargs: Any) -> Iterator[str | ChatResponse]:
        """:meth:`chat` streamed: the answer's text pieces as the model decodes them, then the response."""
        call = ChatCalls.chat(*args, **{**kwargs, "stream": True})
        with self._http.stream("POST", call.path, json=call.json, timeout=httpx.Timeout(30.0, read=None)) as resp:
            if not resp.is_success:
                resp.read()
                parse_answer(call, resp)
            stream: _Events[str | ChatResponse] = _Events(_chat_piece)
            for line in resp.iter_lines():
                if (piece := stream.feed(line)) is not None:
                    yield piece

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    health = _sync(MemoryCalls.health)
    status = _sync(MemoryCalls.status)
    create_cube = _sync(MemoryCalls.create_cube)
    get_cube = _sync(MemoryCalls.get_cube)
    list_cubes = _sync(MemoryCalls.list_cubes)
    delete_cube = _sync(MemoryCalls.delete_cube)
    add = _sync(MemoryCalls.add)
    add_batch = _sync(MemoryCalls.add_batch)
    add_messages = _sync(MemoryCalls.add_messages)
    get = _sync(MemoryCalls.get)
    update = _sync(MemoryCalls.update)
    restore = _sync(MemoryCalls.restore)
    archive = _sync(MemoryCalls.archive)
    delete = _sync(MemoryCalls.delete)
    purge = _sync(MemoryCalls.purge)
    history = _sync(MemoryCalls.history)
    search = _sync(MemoryCalls.search)
    list = _sync(MemoryCalls.list)
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
    export_cube = _sync(BundleCalls.export_cube)
    import_bundle = _sync(BundleCalls.import_bundle)
    bundle_key = _sync(BundleCalls.bundle_key)
    chat = _sync(ChatCalls.chat)
    open_session = _sync(SchedulerCalls.open_session)
    decisions = _sync(SchedulerCalls.decisions)
    cube_usage = _sync(SchedulerCalls.cube_usage)
    set_scheduler_policy = _sync(SchedulerCalls.set_scheduler_policy)
    sweep_scheduler = _sync(SchedulerCalls.sweep_scheduler)


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
        return parse_answer(call, await self._http.request(**call.request()))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def watch(self, cube_id: str, after_seq: int | None = None) -> AsyncIterator[ChangeEvent]:
        """As :meth:`MemosClient.watch`, as an async iterator."""
        path, params = _changes(cube_id, after_seq)
        async with self._http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as resp:
            if not resp.is_success:
                await resp.aread()
                parse_answer(Call("GET", path, no_content), resp)
            stream: _Events[ChangeEvent] = _Events(_change)
            async for line in resp.aiter_lines():
                if (event := stream.feed(line)) is not None:
                    yield event

    async def chat_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[str | ChatResponse]:
        """As :meth:`MemosClient.chat_stream`, as an async iterator."""
        call = ChatCalls.chat(*args, **{**kwargs, "stream": True})
        async with self._http.stream("POST", call.path, json=call.json, timeout=httpx.Timeout(30.0, read=None)) as resp:
            if not resp.is_success:
                await resp.aread()
                parse_answer(call, resp)
            stream: _Events[str | ChatResponse] = _Events(_chat_piece)
            async for line in resp.aiter_lines():
                if (piece := stream.feed(line)) is not None:
                    yield piece

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    health = _async(MemoryCalls.health)
    status = _async(MemoryCalls.status)
    create_cube = _async(MemoryCalls.create_cube)
    get_cube = _async(MemoryCalls.get_cube)
    list_cubes = _async(MemoryCalls.list_cubes)
    delete_cube = _async(MemoryCalls.delete_cube)
    add = _async(MemoryCalls.add)
    add_batch = _async(MemoryCalls.add_batch)
    add_messages = _async(MemoryCalls.add_messages)
    get = _async(MemoryCalls.get)
    update = _async(MemoryCalls.update)
    restore = _async(MemoryCalls.restore)
    archive = _async(MemoryCalls.archive)
    delete = _async(MemoryCalls.delete)
    purge = _async(MemoryCalls.purge)
    history = _async(MemoryCalls.history)
    search = _async(MemoryCalls.search)
    list = _async(MemoryCalls.list)
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
    export_cube = _async(BundleCalls.export_cube)
    import_bundle = _async(BundleCalls.import_bundle)
    bundle_key = _async(BundleCalls.bundle_key)
    chat = _async(ChatCalls.chat)
    open_session = _async(SchedulerCalls.open_session)
    decisions = _async(SchedulerCalls.decisions)
    cube_usage = _async(SchedulerCalls.cube_usage)
    set_scheduler_policy = _async(SchedulerCalls.set_scheduler_policy)
    sweep_scheduler = _async(SchedulerCalls.sweep_scheduler)


__all__ = ["DEFAULT_URL", "AsyncMemosClient", "MemosClient"]
