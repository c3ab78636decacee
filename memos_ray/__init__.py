"""memos-ray: a memory operating system for LLM agents.

This package is the core (no Ray actors, no Serve): the schema (:mod:`memos_ray.types`), the error
tree (:mod:`memos_ray.errors`), the SDK (:mod:`memos_ray.client`), the configuration, and one folder
per concern: ``plaintext``, ``activation``, ``parametric``, ``governance``.

    from memos_ray import MemosClient, CubeNotFound

Importing it loads only pydantic (and httpx when the SDK is first used): agents install the SDK
without the server stack, and server processes, which import this package for everything else, do
not load the HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memos_ray.errors import (
    Conflict,
    CubeExists,
    CubeNotFound,
    Forbidden,
    InvalidInput,
    JobNotFound,
    KeyNotFound,
    MemoryNotFound,
    MemosError,
    NotFound,
    PayloadTooLarge,
    PrincipalNotFound,
    QuotaExceeded,
    Unauthenticated,
    Unavailable,
    VersionConflict,
)

if TYPE_CHECKING:
    from memos_ray.client import DEFAULT_URL, AsyncMemosClient, MemosClient

__version__ = "0.1.0"
_SDK = {"DEFAULT_URL", "AsyncMemosClient", "MemosClient"}


def __getattr__(name: str) -> Any:
    if name in _SDK:
        from memos_ray import client

        return getattr(client, name)
    raise AttributeError(f"module 'memos_ray' has no attribute {name!r}")


__all__ = [
    "DEFAULT_URL",
    "AsyncMemosClient",
    "Conflict",
    "CubeExists",
    "CubeNotFound",
    "Forbidden",
    "InvalidInput",
    "JobNotFound",
    "KeyNotFound",
    "MemoryNotFound",
    "MemosClient",
    "MemosError",
    "NotFound",
    "PayloadTooLarge",
    "PrincipalNotFound",
    "QuotaExceeded",
    "Unauthenticated",
    "Unavailable",
    "VersionConflict",
    "__version__",
]
