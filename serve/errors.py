"""The one table from the error tree to HTTP, and the JSON error body every 4xx/5xx carries.

Body: ``{"error": {"code": ..., "message": ..., "details": {...}}}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError, RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException

from memos_ray import errors as e

STATUS: dict[type[e.MemosError], int] = {
    e.InvalidInput: 422,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.PayloadTooLarge: 413,
    e.QuotaExceeded: 429,
    e.Unavailable: 503,
}


def status_of(exc: e.MemosError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def unwrap(exc: BaseException) -> BaseException:
    """Ray wraps an actor's exception in RayTaskError; the cause is what we report."""
    while isinstance(exc, RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[assignment]
    return exc


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


OnError = Callable[[Request, int, str, str, dict[str, Any]], Awaitable[None]]


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install(app: FastAPI, on_error: OnError | None = None) -> None:
    """Map errors to JSON answers; ``on_error(request, status, code, message, details)`` sees each one first
    (the ingress audits denied accesses and failed mutations there)."""

    async def respond(
        request: Request, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> JSONResponse:
        if on_error is not None:
            await on_error(request, status, code, message, details or {})
        return JSONResponse(status_code=status, content=error_body(code, message, details))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in err.items() if k in ("type", "loc", "msg")} for err in exc.errors()]
        if any(err.get("type") == "json_invalid" for err in errors):
            return await respond(request, 400, "malformed_json", "request body is not valid JSON", {"errors": errors})
        return await respond(request, 422, "invalid_input", _validation_message(errors), {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return await respond(request, exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(e.MemosError)
    async def _memos(request: Request, exc: e.MemosError) -> JSONResponse:
        return await respond(request, status_of(exc), exc.code, exc.message, exc.details)

    @app.exception_handler(RayTaskError)
    async def _ray_task(request: Request, exc: RayTaskError) -> JSONResponse:
        cause = unwrap(exc)
        if isinstance(cause, e.MemosError):
            return await _memos(request, cause)
        return await respond(request, 500, "internal", f"{type(cause).__name__}: {cause}")

    @app.exception_handler(RayActorError)
    async def _ray_actor(request: Request, exc: RayActorError) -> JSONResponse:
        return await respond(request, 503, "unavailable", "an actor serving this request died; retry")
