"""The one table from the error tree to HTTP, and the JSON error body every 4xx/5xx carries.

Body: ``{"error": {"code": ..., "message": ..., "details": {...}}}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError, RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException

from memos_ray import errors as e

STATUS: dict[type[e.MemosError], int] = {
    e.InvalidInput: 422,
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


def _json(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(code, message, details))


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in err.items() if k in ("type", "loc", "msg")} for err in exc.errors()]
        if any(err.get("type") == "json_invalid" for err in errors):
            return _json(400, "malformed_json", "request body is not valid JSON", {"errors": errors})
        return _json(422, "invalid_input", _validation_message(errors), {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(e.MemosError)
    async def _memos(_: Request, exc: e.MemosError) -> JSONResponse:
        return _json(status_of(exc), exc.code, exc.message, exc.details)

    @app.exception_handler(RayTaskError)
    async def _ray_task(request: Request, exc: RayTaskError) -> JSONResponse:
        cause = unwrap(exc)
        if isinstance(cause, e.MemosError):
            return await _memos(request, cause)
        return _json(500, "internal", f"{type(cause).__name__}: {cause}")

    @app.exception_handler(RayActorError)
    async def _ray_actor(_: Request, exc: RayActorError) -> JSONResponse:
        return _json(503, "unavailable", "an actor serving this request died; retry")
