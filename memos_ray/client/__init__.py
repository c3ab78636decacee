"""The Python SDK: :class:`MemosClient` and :class:`AsyncMemosClient`, one method per HTTP route.

It needs only :mod:`memos_ray.types`, :mod:`memos_ray.errors` and httpx, so an agent installs
``memos-ray`` without the server stack. A non-2xx answer raises the server's own error class
(``CubeNotFound``, ``VersionConflict``, ...), carrying the HTTP status and the server's details.
"""

from __future__ import annotations

from memos_ray.client.clients import DEFAULT_URL, AsyncMemosClient, MemosClient

__all__ = ["DEFAULT_URL", "AsyncMemosClient", "MemosClient"]
