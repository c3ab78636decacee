"""``Idempotency-Key`` on every mutating route: a retry of a request gets the first request's answer.

The rules (what is replayed, what conflicts, when a retry runs again) are the store's
(``memos_ray/governance/idempotency.py``); this is where a request meets them: after the body is read,
before the route runs. A key is scoped to the credential presented (its SHA-256), a request is identified
by its method, path, query and body. A streamed answer (a chat with ``stream: true``) is not kept: its key
is released and a retry streams again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import ray
from fastapi import Request, Response
from ray.actor import ActorHandle

from actors.calls import call
from actors.idempotency import Idempotency
from memos_ray import errors as e

HEADER = "idempotency-key"
REPLAYED = "Idempotency-Replayed"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,255}$")

Next = Callable[[Request], Awaitable[Response]]
SETTLE_S = 20.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Keyed:
    """The request's key, for routes that make ids from it (``request.state.idempotency``)."""

    seed: str  # the scope and the key: what makes ids unique to this request
    first_at: float


def keyed(request: Request) -> Keyed | None:
    return getattr(request.state, "idempotency", None)


def _applies(request: Request) -> bool:
    path = request.url.path  # a search is a POST that changes nothing: a key there is ignored
    return request.method in MUTATING and path.startswith("/v1/") and not path.endswith("/search")


async def idempotent(request: Request, call_next: Next) -> Response:
    """Run ``call_next`` under the request's Idempotency-Key, if it has one (and the route mutates)."""
    key = request.headers.get(HEADER)
    if key is None or not _applies(request):
        return await call_next(request)
    if not _KEY.fullmatch(key):
        raise e.BadRequest(
            "Idempotency-Key must be 1-255 characters of letters, digits and . _ : -", {"header": "Idempotency-Key"}
        )
    credential = request.headers.get("authorization") or request.headers.get("x-api-key") or ""
    scope = hashlib.sha256(credential.encode()).hexdigest()
    body = await request.body()
    what = f"{request.method} {request.url.path}?{request.url.query}\n".encode() + body
    fingerprint = hashlib.sha256(what).hexdigest()
    store = request.app.state.services.idempotency
    try:
        claim = await call(store, Idempotency.claim, scope, key, fingerprint, _holder())
    except e.MemosError:
        raise
    except Exception as exc:  # its actor is restarting: nothing ran
        raise e.Unavailable("idempotency keys cannot be checked right now: retry", {"retry": True}) from exc
    if claim.outcome == "replay":
        return Response(claim.body, claim.status, {REPLAYED: "true"}, media_type=claim.media_type or None)
    if claim.outcome == "in_flight":
        raise e.Conflict(
            "a request with this Idempotency-Key is still running: retry after it answers", {"idempotency_key": key}
        )
    if claim.outcome == "mismatch":
        raise e.InvalidInput(
            "this Idempotency-Key was used for a different request (method, path or body): use a new key",
            {"idempotency_key": key},
        )
    request.state.idempotency = Keyed(f"{scope}|{key}", claim.first_at)
    try:
        response = await call_next(request)
    except BaseException:
        await _settle(store, Idempotency.release, scope, key)
        raise
    media_type = response.headers.get("content-type", "")
    if response.status_code >= 500 or media_type.startswith("text/event-stream"):
        await _settle(store, Idempotency.release, scope, key)
        return response
    content = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
    if not await _settle(store, Idempotency.finish, scope, key, response.status_code, media_type, content):
        # the answer could not be kept: free the key, so a retry runs again (a keyed add finds its memories)
        await _settle(store, Idempotency.release, scope, key)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(content, response.status_code, headers)


def _holder() -> str | None:
    """This replica's actor name (Serve names each uniquely), for the keys' actor to ask Ray after; None
    outside an actor."""
    return ray.get_runtime_context().get_actor_name() if ray.is_initialized() else None


async def _settle(store: ActorHandle, method: Callable[..., object], *args: object) -> bool:
    """Record how a keyed request ended, through a restart of the keys' actor (its node lost?): retried for up
    to SETTLE_S. False when it could not be: the request's own answer still goes out (bookkeeping never turns
    a done request into a 500), and a key left reserved is taken over after ``serve.idempotency_lease_s``."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            await call(store, method, *args)  # type: ignore[arg-type]
            return True
        except e.MemosError:
            raise
        except Exception:
            if time.monotonic() > deadline:
                log.warning("could not record the end of a keyed request (%s)", getattr(method, "__name__", method))
                return False
            await asyncio.sleep(0.5)
