"""The SDK's request layer: what one call sends, how an answer is read, and the API error.

Shared by the request builders of ``memos_ray/client/memory.py``, ``governance.py`` and ``adapters.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from memos_ray.errors import MemosError

T = TypeVar("T")
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
class Call(Generic[T]):
    """One request: method, path, query params and JSON body, and how to read a 2xx answer's JSON."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Params | None = None
    json: Any = None


def parse_answer(call: Call[T], resp: httpx.Response) -> T:
    """The one response reader: 2xx -> ``call.parse(json or None)``; anything else -> MemosAPIError."""
    if not resp.is_success:
        try:
            err = resp.json()["error"]
            exc = MemosAPIError(resp.status_code, str(err["code"]), str(err["message"]), dict(err.get("details") or {}))
        except (ValueError, KeyError, TypeError, AttributeError):
            exc = MemosAPIError(resp.status_code, "http_error", resp.text[:500] or resp.reason_phrase)
        raise exc
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
