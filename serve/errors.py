"""The error tree, answered over HTTP: the JSON body every 4xx/5xx carries, and the handlers.

Body: ``{"error": {"code": ..., "message": ..., "details": {...}}}``; the status comes from the one
table in :data:`memos_ray.errors.HTTP_STATUS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray.exceptions import RayActorError, RayError, RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors import metrics
from actors.calls import unwrap
from memos_ray import errors as e


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


class ErrorDetail(BaseModel):
    code: str = Field(description="what went wrong, for programs (e.g. cube_not_found, quota_exceeded)")
    message: str = Field(description="what went wrong, for people: names the field, the id or the limit")
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """What every 4xx and 5xx answer carries (its schema in the OpenAPI)."""

    error: ErrorDetail


_MEANING = {
    400: "malformed request (not JSON, a bad header)",
    401: "no API key, or one that is unknown, revoked or expired",
    403: "the key's principal may see this but not do it",
    404: "no such resource, or one the caller may not see",
    409: "conflicts with the current state (an id taken, a version moved on, a request still running)",
    413: "body over the size limit",
    422: "a field is invalid: the message names it",
    429: "a quota is full",
    503: "a part of the service is restarting or unreachable: retry (with the same Idempotency-Key)",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": meaning} for status, meaning in _MEANING.items()
}
"""Declared on every route: the statuses the error table (``memos_ray.errors.HTTP_STATUS``) answers with."""


OnError = Callable[[Request, int, str, str, dict[str, Any]], Awaitable[None]]


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def route_of(request: Request) -> str:
    """The matched route's template (``/v1/cubes/{cube_id}``), or ``unmatched``: what metrics are tagged with, so
    ids do not multiply series."""
    return str(getattr(request.scope.get("route"), "path", "unmatched"))


def as_memos_error(exc: BaseException) -> e.MemosError:
    """Any failure as the error tree: ours as itself, an actor that died as Unavailable, the rest Internal."""
    cause = unwrap(exc)
    if isinstance(cause, e.MemosError):
        return cause
    if isinstance(cause, RayActorError):
        return e.Unavailable("an actor serving this request died; retry")
    if isinstance(cause, RayError) and not isinstance(cause, RayTaskError):  # an object or node lost under it
        return e.Unavailable(f"a part of the service was lost under this request ({type(cause).__name__}); retry")
    return e.Internal(f"{type(cause).__name__}: {cause}")


def install(
    app: FastAPI, on_error: OnError | None = None
) -> Callable[[Request, e.MemosError], Awaitable[JSONResponse]]:
    """Map errors to JSON answers; ``on_error(request, status, code, message, details)`` sees each one first
    (the ingress audits denied accesses and failed mutations there). Returns the responder, for the
    middleware, which runs outside these handlers."""

    async def respond(request: Request, exc: e.MemosError) -> JSONResponse:
        metrics.count("memos_errors_total", route=route_of(request), status=str(exc.status_code), code=exc.code)
        if on_error is not None:
            await on_error(request, exc.status_code, exc.code, exc.message, exc.details)
        return JSONResponse(status_code=exc.status_code, content=error_body(exc.code, exc.message, exc.details))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in err.items() if k in ("type", "loc", "msg")} for err in exc.errors()]
        if any(err.get("type") == "json_invalid" for err in errors):
            bad = e.BadRequest("request body is not valid JSON", {"errors": errors})
            bad.code = "malformed_json"
            return await respond(request, bad)
        return await respond(request, e.InvalidInput(_validation_message(errors), {"errors": errors}))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = e.MemosError(str(exc.detail))
        err.code, err.status_code = "http_error", exc.status_code
        return await respond(request, err)

    @app.exception_handler(e.MemosError)
    async def _memos(request: Request, exc: e.MemosError) -> JSONResponse:
        return await respond(request, exc)

    @app.exception_handler(RayTaskError)
    async def _ray_task(request: Request, exc: RayTaskError) -> JSONResponse:
        return await respond(request, as_memos_error(exc))

    @app.exception_handler(RayActorError)
    async def _ray_actor(request: Request, exc: RayActorError) -> JSONResponse:
        return await respond(request, as_memos_error(exc))

    @app.exception_handler(RayError)
    async def _ray(request: Request, exc: RayError) -> JSONResponse:
        return await respond(request, as_memos_error(exc))

    return respond
