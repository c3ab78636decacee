"""The SDK's request layer: what one call sends, and how an answer is read (a non-2xx one raises the error tree).

Shared by the request builders of ``memos_ray/client/memory.py``, ``governance.py``, ``adapters.py`` and
``bundles.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from memos_ray.errors import from_answer

T = TypeVar("T")
Json = dict[str, Any]
Params = list[tuple[str, str | int | float | bool | None]]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: method, path, query params and JSON body, and how to read a 2xx answer's JSON. A file
    (a bundle) goes as ``content`` with its ``content_type`` instead of JSON; ``raw``: the answer is a file,
    ``parse`` gets its bytes."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Params | None = None
    json: Any = None
    content: bytes | None = None
    content_type: str | None = None
    raw: bool = False

    def request(self) -> dict[str, Any]:
        """The arguments of ``httpx.Client.request`` that send it."""
        headers = {"Content-Type": self.content_type} if self.content_type else None
        return {
            "method": self.method,
            "url": self.path,
            "params": self.params,
            "json": self.json,
            "content": self.content,
            "headers": headers,
        }


def parse_answer(call: Call[T], resp: httpx.Response) -> T:
    """The one response reader: 2xx -> ``call.parse(json or None)``; anything else raises the server's error
    class (:func:`memos_ray.errors.from_answer`), or one chosen by status when the body is not ours."""
    if not resp.is_success:
        try:
            err = resp.json()["error"]
            exc = from_answer(resp.status_code, str(err["code"]), str(err["message"]), dict(err.get("details") or {}))
        except (ValueError, KeyError, TypeError, AttributeError):
            exc = from_answer(resp.status_code, "http_error", resp.text[:500] or resp.reason_phrase)
        raise exc
    if call.raw:
        return call.parse(resp.content)
    return call.parse(resp.json() if resp.content else None)


def seg(value: str) -> str:
    return quote(value, safe="")


def given(**fields: Any) -> Json:
    """The arguments actually given (None means 'leave out'), so ``exclude_unset`` omits the rest."""
    return {k: v for k, v in fields.items() if v is not None}


def body_of(model: type[BaseModel], data: Json) -> Json:
    return model.model_validate(data).model_dump(mode="json", exclude_unset=True)


def no_content(_: Any) -> None:
    return None


def as_json(data: Any) -> Json:
    return dict(data)


def as_bytes(data: Any) -> bytes:
    return bytes(data)
