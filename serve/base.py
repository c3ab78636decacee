"""What every route of the ingress stands on: the FastAPI app, authentication, auditing, and the
call into a cube's actor.

- Every route except ``/v1/health`` depends on :func:`caller`: the API key (``Authorization:
  Bearer <key>`` or ``X-API-Key``) is checked by the Identity actor on every request, so the
  principal always comes from the key and a revoked key fails at once. The OpenAPI pages need a
  key as well, unless ``serve.public_docs`` opens them.
- Every route declares its audit action (``dependencies=[act("memory.add")]``). A mutation
  that succeeds records itself (:meth:`IngressBase._audit`); a mutation that fails, and every
  denied access (401, 403, and 404 for a cube), is recorded by the error handler.
- Each response carries ``X-Request-Id`` (the caller's, or Serve's own), which the audit log keeps.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import ray
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from ray.serve.context import _get_serve_request_context

from actors.runtime import ensure_runtime
from memos_ray import __version__
from memos_ray.config import MemosConfig
from memos_ray.errors import MemosError, Unauthenticated, Unavailable
from memos_ray.governance.identity import key_id_of
from memos_ray.governance.redact import Redactor
from memos_ray.types import MAX_SEARCH_CUBES, AuditEvent, Caller, Result, Role, SearchHit, SearchQuery, SearchResponse
from serve.errors import error_body, install, unwrap

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

app = FastAPI(
    title="memos-ray",
    version=__version__,
    description="A memory operating system for LLM agents: MemCube actors on Ray, served by Ray Serve. "
    "Every route except /v1/health needs an API key: 'Authorization: Bearer <key>'.",
)

# Audit actions that only read. Failures of these are recorded only when access was denied.
READ_ACTIONS = frozenset(
    {"cube.read", "memory.read", "search", "chat", "changes", "audit.read", "identity.read", "status", "docs"}
    | {"adapter.read"}
)
DENIALS = frozenset(
    {"unauthenticated", "forbidden", "cube_not_found", "principal_not_found", "key_not_found", "job_not_found"}
)
READ_METHODS = frozenset({"get", "list", "history", "search", "meta", "wait_changes"})
MAX_FAN_OUT = 8  # cubes one search activates at once: a wide search must not flush every warm cube
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _event(request: Request, status: int, result: Result, **fields: Any) -> AuditEvent:
    who: Caller | None = getattr(request.state, "caller", None)
    return AuditEvent(
        principal=who.principal if who else None,
        key_id=who.key_id if who else key_id_of(getattr(request.state, "key", None)),
        action=getattr(request.state, "action", None) or "request",
        result=result,
        status=status,
        cube_id=fields.pop("cube_id", None) or request.path_params.get("cube_id"),
        memory_id=fields.pop("memory_id", None) or request.path_params.get("memory_id"),
        method=request.method,
        path=request.url.path,
        request_id=getattr(request.state, "request_id", None),
        details=fields.pop("details", None) or {},
    )


async def _audit_failure(
    request: Request, status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> None:
    """The error handlers' hook: denied accesses always, failed mutations, are audited. The cube is the
    path's, or the one the error names (a search or chat over several cubes)."""
    action = getattr(request.state, "action", None)
    denied = code in DENIALS
    if not denied and (action is None or action in READ_ACTIONS):
        return
    cube_id = (details or {}).get("cube_id")
    event = _event(
        request,
        status,
        "denied" if denied else "error",
        cube_id=cube_id if isinstance(cube_id, str) else None,
        details={"code": code, "message": message},
    )
    try:
        await app.state.audit.append.remote([event])
    except Exception:  # the answer still goes out; the failure to record it is logged
        log.exception("could not audit %s %s", request.method, request.url.path)


install(app, on_error=_audit_failure)


@app.middleware("http")
async def before_routes(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """What every request passes first: its id for the audit log, the key check of the OpenAPI pages
    (routes check theirs in :func:`caller`), and 413 before reading a body over the limit."""
    # Serve's proxy takes the caller's X-Request-Id (or makes one) and echoes it in the answer: keep that id.
    given = _get_serve_request_context().request_id or request.headers.get("x-request-id") or ""
    request.state.request_id = given[:128] if _REQUEST_ID.fullmatch(given[:128]) else uuid.uuid4().hex
    if request.url.path in DOC_PATHS and not getattr(app.state, "public_docs", False):
        try:  # the API's description is a route like the others: it needs a key (serve.public_docs opens it)
            request.state.action = "docs"
            await caller(request, request.headers.get("authorization"), request.headers.get("x-api-key"))
        except MemosError as exc:
            await _audit_failure(request, 401, exc.code, exc.message, exc.details)
            return JSONResponse(status_code=401, content=error_body(exc.code, exc.message, exc.details))
    limit: int = getattr(app.state, "max_body_bytes", 4 * 1024 * 1024)
    declared = request.headers.get("content-length")
    too_large = JSONResponse(
        status_code=413,
        content=error_body("payload_too_large", f"request body exceeds {limit} bytes", {"limit": limit}),
    )
    if declared is not None:
        if not declared.isdigit():
            return JSONResponse(status_code=400, content=error_body("bad_request", "invalid Content-Length"))
        if int(declared) > limit:
            return too_large
    elif request.method in ("POST", "PUT", "PATCH"):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return too_large
        request._body = body  # starlette reuses a body that was already read
    return await call_next(request)


def shielded(route: F) -> F:
    """Run a mutating route to the end even if its client goes away: Serve cancels the request's task on a
    disconnect, and a write already sent to a cube must still get its audit record."""

    @functools.wraps(route)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.shield(asyncio.ensure_future(route(*args, **kwargs)))

    return run  # type: ignore[return-value]


def act(action: str) -> Any:
    """A route's audit action, as a route dependency: ``dependencies=[act("memory.add")]``."""

    async def mark(request: Request) -> None:
        request.state.action = action

    return Depends(mark)


async def caller(
    request: Request,
    authorization: str | None = Header(None, include_in_schema=False),
    x_api_key: str | None = Header(None, include_in_schema=False),
) -> Caller:
    """The authenticated principal of this request (401 otherwise)."""
    key = x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
        key = token.strip()
    request.state.key = key
    try:
        who: Caller = await app.state.identity.authenticate.remote(key)
    except Exception as exc:
        raise unwrap(exc) from None
    request.state.caller = who
    return who


Auth = Depends(caller)


class IngressBase:
    """State and plumbing shared by the route groups (mixins) of the ingress deployment."""

    def __init__(self, config: MemosConfig) -> None:
        self.config = config
        app.state.max_body_bytes = config.serve.max_body_bytes
        app.state.public_docs = config.serve.public_docs
        runtime = ensure_runtime(config, wait=False)
        self.directory = runtime.directory
        self.embedder = runtime.embedder
        self.identity = app.state.identity = runtime.identity
        self.audit = app.state.audit = runtime.audit
        self.adapters = runtime.adapters
        self.redactor = Redactor(config.governance.redaction)

    async def _call(self, handle: Any, method: str, *args: Any) -> Any:
        """An actor call whose MemosError reaches the client as itself (not wrapped by Ray)."""
        try:
            return await getattr(handle, method).remote(*args)
        except Exception as exc:
            raise unwrap(exc) from None

    async def _embed(self, texts: list[str]) -> np.ndarray:
        return await self.embedder.embed.remote(texts)

    async def _cube(self, who: Caller, cube_id: str, need: Role, method: str, *args: Any) -> Any:
        """Call a cube's actor if ``who`` holds ``need`` on it, reactivating it if it was passivated under us."""
        for attempt in range(3):
            try:
                handle = await self.directory.activate.remote(cube_id, who, need)
            except Exception as exc:
                raise unwrap(exc) from None
            try:
                return await getattr(handle, method).remote(*args)
            except Exception as exc:
                cause = unwrap(exc)
                died = isinstance(cause, ray.exceptions.RayActorError)
                retired = died and await self.directory.drop_dead.remote(cube_id, handle)
                # A passivated actor refused the call, or died after passivating without running it:
                # always safe to retry. One that crashed may have applied a write: only reads retry.
                passivated = isinstance(cause, Unavailable) and bool(cause.details.get("retry"))
                if attempt == 2 or not (passivated or retired or (died and method in READ_METHODS)):
                    raise cause from None
        raise Unavailable(f"cube {cube_id} unavailable")

    async def _search(self, who: Caller, cube_ids: list[str] | None, q: SearchQuery) -> SearchResponse:
        """Search ``cube_ids`` (all readable by ``who``, or 404/403 before any is touched), or, with None,
        every cube ``who`` may read (resolved by the Directory), most recently changed first."""
        start = time.perf_counter()
        if cube_ids is None:
            cube_ids = (await self.directory.readable.remote(who))[:MAX_SEARCH_CUBES]
        else:
            try:
                await self.directory.authorize_many.remote(cube_ids, who, Role.read)
            except Exception as exc:
                raise unwrap(exc) from None
        qvec = None
        if q.mode != "bm25" and cube_ids:
            qvec = (await self._embed([q.query]))[0]
        fan_out = asyncio.Semaphore(MAX_FAN_OUT)

        async def one(cube_id: str) -> list[SearchHit]:
            async with fan_out:
                return await self._cube(who, cube_id, Role.read, "search", q, qvec)

        results = await asyncio.gather(*(one(c) for c in cube_ids))
        hits: list[SearchHit] = [h for part in results for h in part]
        hits.sort(key=lambda h: h.score, reverse=True)
        return SearchResponse(hits=hits[: q.top_k], took_ms=(time.perf_counter() - start) * 1000, cube_ids=cube_ids)

    async def _audit(
        self,
        request: Request,
        *,
        cube_id: str | None = None,
        memory_ids: Sequence[str] = (),
        details: Sequence[dict[str, Any]] | dict[str, Any] | None = None,
        action: str | None = None,
        status: int = 200,
    ) -> None:
        """Record a successful mutation: one record per memory it touched, or per entry of a ``details``
        list, or one."""
        if action is not None:
            request.state.action = action
        if isinstance(details, Sequence):
            per = list(details)
        else:
            per = [details or {}] * max(1, len(memory_ids))
        ids: list[str | None] = list(memory_ids) or [None] * len(per)
        events = [
            _event(request, status, "ok", cube_id=cube_id, memory_id=m, details=d)
            for m, d in zip(ids, per, strict=True)
        ]
        await self.audit.append.remote(events)
