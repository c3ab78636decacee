"""Typed calls into actors: the method is named by reference, not by a string, and whether a call may
be retried is declared on the method itself.

    meta = await call(directory, Directory.get_cube, cube_id, who)

mypy checks the arguments against the method's signature and the result against its return type,
so renaming or reordering an actor method breaks the build, not a request. An actor's
:class:`~memos_ray.errors.MemosError` reaches the caller as itself, not wrapped by Ray.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar, overload

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayTaskError

from memos_ray.errors import MemosError

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

_READ_ONLY = "__memos_read_only__"

# The actors that keep files under data_dir (the storage shards with milvus-lite) and the control plane (the
# Directory, the stores' owners, the Scheduler: actors/runtime.py) run on the head node, wherever the caller
# is and wherever Ray restarts them.
ON_HEAD = {"node:__internal_head__": 0.001}


def read_only(method: F) -> F:
    """Declare that a method changes nothing, so a caller may run it again on a fresh actor when the
    one it called died mid-call (a write may have been applied before the death: never retried)."""
    setattr(method, _READ_ONLY, True)
    return method


def is_read_only(method: Callable[..., Any]) -> bool:
    return bool(getattr(method, _READ_ONLY, False))


def unwrap(exc: BaseException) -> BaseException:
    """Ray wraps an actor's exception in RayTaskError; the cause is what callers see."""
    while isinstance(exc, RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[assignment]
    return exc


@overload
async def call(  # type: ignore[overload-overlap]
    handle: ActorHandle, method: Callable[Concatenate[Any, P], Awaitable[R]], *args: P.args, **kwargs: P.kwargs
) -> R: ...
@overload
async def call(
    handle: ActorHandle, method: Callable[Concatenate[Any, P], R], *args: P.args, **kwargs: P.kwargs
) -> R: ...
async def call(handle: ActorHandle, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``handle.<method>.remote(*args, **kwargs)``, awaited. An error the actor raised on purpose (a
    :class:`MemosError`) is raised as itself; anything else stays Ray's (the HTTP layer answers 500)."""
    try:
        return await getattr(handle, method.__name__).remote(*args, **kwargs)
    except RayTaskError as exc:
        _reraise(exc)


def blocking(handle: ActorHandle, method: Callable[Concatenate[Any, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
    """:func:`call` for synchronous code that must not go on before the actor answered (a cube's durable
    write, on the cube's event loop: its state changes run to completion). Errors as :func:`call`'s."""
    try:
        return ray.get(getattr(handle, method.__name__).remote(*args, **kwargs))  # type: ignore[no-any-return]
    except RayTaskError as exc:
        _reraise(exc)


def _reraise(exc: RayTaskError) -> NoReturn:
    cause = unwrap(exc)
    if isinstance(cause, MemosError):
        raise cause from None
    raise exc


def streaming(handle: ActorHandle, method: Any, *args: Any) -> Any:
    """A streaming method's generator of ObjectRefs (``@ray.method(num_returns="streaming")``), named by
    reference like :func:`call`."""
    return getattr(handle, method.__name__).remote(*args)


def actor_class(cls: type, **options: Any) -> Any:
    """``ray.remote(**options)(cls)``: the actor class, kept apart from ``cls`` so that ``cls``'s methods
    name the calls (Ray's stubs know fewer actor options than Ray does)."""
    return ray.remote(**options)(cls)


class NamedActors:
    """The namespace's shared actors by name, each looked up once; None while one was never started.
    ``forget`` after a failed call: the actor may have been replaced."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handles: dict[str, ActorHandle] = {}

    def get(self, name: str) -> ActorHandle | None:
        if name not in self._handles:
            with contextlib.suppress(ValueError):
                self._handles[name] = ray.get_actor(name, namespace=self.namespace)
        return self._handles.get(name)

    def put(self, name: str, handle: ActorHandle) -> None:
        self._handles[name] = handle

    def forget(self) -> None:
        self._handles.clear()


def tell(handle: ActorHandle, method: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Fire and forget: for bookkeeping that must not sit on a request's path (its failure is the
    callee's to log). An async actor may run it after a later call from the same caller."""
    getattr(handle, method.__name__).remote(*args, **kwargs)


__all__ = [
    "ON_HEAD",
    "NamedActors",
    "actor_class",
    "blocking",
    "call",
    "is_read_only",
    "read_only",
    "streaming",
    "tell",
    "unwrap",
]
