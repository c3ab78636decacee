"""memos-ray: a memory operating system for LLM agents.

This package is the core (no Ray actors, no Serve): the schema (:mod:`memos_ray.types`), the error
tree (:mod:`memos_ray.errors`), the SDK (:mod:`memos_ray.client`), the configuration, and one folder
per concern: ``plaintext``, ``activation``, ``parametric``, ``governance``.

    from memos_ray import MemosClient, CubeNotFound

Importing it loads only pydantic and httpx: agents install the SDK without the server stack.
"""

from memos_ray.client import DEFAULT_URL, AsyncMemosClient, MemosClient
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

__version__ = "0.1.0"

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
