"""What every request passes before its route: its id for the audit log, the key check of the OpenAPI
pages (routes check theirs in :func:`serve.auth.caller`), 413 before reading a body over the limit, and
its ``Idempotency-Key`` (``serve/idempotency.py``).
Failures raise the error tree; a middleware runs outside FastAPI's handlers, so it answers them with
the same responder."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from ray.serve.context import _get_serve_request_context

from actors import metrics
from memos_ray import errors as e
from memos_ray.types import AuditAction
from serve.auth import authenticate
from serve.errors import route_of
from serve.idempotency import idempotent

MCP_PATH = "/mcp"
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_BUNDLE = re.compile(r"^/v1/cubes/[^/]+/bundle$")  # a bundle import: its own limit (serve.max_bundle_bytes)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Respond = Callable[[Request, e.MemosError], Awaitable[JSONResponse]]


def _request_id(request: Request) -> str:
    # Serve's proxy takes the caller's X-Request-Id (or makes one) and echoes it in the answer: keep that id.
    given = _get_serve_request_context().request_id or request.headers.get("x-request-id") or ""
    return given[:128] if _REQUEST_ID.fullmatch(given[:128]) else uuid.uuid4().hex


async def _checks(request: Request, limit: int, public_docs: bool) -> None:
    if request.url.path in DOC_PATHS and not public_docs:
        request.state.action = AuditAction.docs  # the API's description needs a key like any route
        await authenticate(request, request.headers.get("authorization"), request.headers.get("x-api-key"))
    elif request.url.path == MCP_PATH:  # a 401 before the MCP transport; each tool's REST call checks again
        await authenticate(request, request.headers.get("authorization"), request.headers.get("x-api-key"))
    declared = request.headers.get("content-length")
    too_large = e.PayloadTooLarge(f"request body exceeds {limit} bytes", {"limit": limit})
    if declared is not None:
        if not declared.isdigit():
            raise e.BadRequest("invalid Content-Length")
        if int(declared) > limit:
            raise too_large
    elif request.method in ("POST", "PUT", "PATCH"):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        request._body = body  # starlette reuses a body that was already read


def install_middleware(app: FastAPI, respond: Respond) -> None:
    @app.middleware("http")
    async def before_routes(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request.state.request_id = _request_id(request)
        serve = request.app.state.services.config.serve
        start = time.perf_counter()
        try:
            bundle = request.method == "POST" and _BUNDLE.fullmatch(request.url.path) is not None
            await _checks(request, serve.max_bundle_bytes if bundle else serve.max_body_bytes, serve.public_docs)
            response = await idempotent(request, call_next)
        except e.MemosError as exc:
            response = await respond(request, exc)
        # to the answer's head (a stream's body follows); the route's template, so ids do not multiply series
        ms = (time.perf_counter() - start) * 1000
        metrics.observe(
            "memos_request_ms", ms, route=route_of(request), method=request.method, status=str(response.status_code)
        )
        return response
