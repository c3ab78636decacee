"""Request builders for portable MemCube bundles (export a cube as one signed file, import one, the server's
signing key), used by both SDK clients in ``memos_ray/client/clients.py``.

    data = source.export_cube("alice")                 # bytes: write them to alice.memcube
    imported = target.import_bundle("alice-copy", data)  # the target cube exists; write role
"""

from __future__ import annotations

from memos_ray.client._request import Call, as_bytes, seg
from memos_ray.types import BUNDLE_MEDIA_TYPE, BundleImported, BundleKeyInfo


class BundleCalls:
    """Request builders for bundles."""

    @staticmethod
    def export_cube(cube_id: str) -> Call[bytes]:
        """The cube as one signed bundle file (read role): every version of every memory, its adapters, its KV
        cache metadata."""
        return Call("GET", f"/v1/cubes/{seg(cube_id)}/bundle", as_bytes, raw=True)

    @staticmethod
    def import_bundle(cube_id: str, data: bytes) -> Call[BundleImported]:
        """Import a bundle file into an existing cube (write role): verified whole before anything is written;
        a repeat into the same cube raises ``Conflict``, a tampered or truncated file a 4xx error."""
        path = f"/v1/cubes/{seg(cube_id)}/bundle"
        return Call("POST", path, BundleImported.model_validate, content=bytes(data), content_type=BUNDLE_MEDIA_TYPE)

    @staticmethod
    def bundle_key() -> Call[BundleKeyInfo]:
        """The public key this server signs its bundles with, and its key id."""
        return Call("GET", "/v1/bundles/key", BundleKeyInfo.model_validate)
