"""The server's bundle signing key: Ed25519, kept in one file beside the data (``<data_dir>/bundle.key``).

A bundle's manifest is signed with it; its public half travels in the manifest, so an importing server checks
the signature without any exchange, and can pin the exporters it trusts by key id or public key. The file holds
the private key's 32-byte seed as hex; it is made once, mode 0600, and never rewritten.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import Field

from memos_ray.types import Strict

HEX64 = r"^[0-9a-f]{64}$"


class BundleKey(Strict):
    """An Ed25519 private key (its seed, hex). Never logged: the field is out of the repr."""

    private_key: str = Field(min_length=64, max_length=64, pattern=HEX64, repr=False)

    @classmethod
    def load(cls, path: Path) -> BundleKey:
        """The key in ``path``, made there (mode 0600) if there is none yet."""
        if path.exists():
            return cls.model_validate_json(path.read_text())
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        made = cls(private_key=seed.hex())
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it between the check and here: theirs stands
            return cls.model_validate_json(path.read_text())
        with os.fdopen(fd, "w") as f:
            f.write(made.model_dump_json())
        return made

    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(self.private_key))

    @property
    def public_key_hex(self) -> str:
        return self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key_hex)

    def sign(self, data: bytes) -> str:
        """The signature of ``data``, hex (128 digits)."""
        return self._private().sign(data).hex()


def key_id_of(public_key_hex: str) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    return hashlib.sha256(bytes.fromhex(public_key_hex)).hexdigest()[:16]


def verify(public_key_hex: str, data: bytes, signature_hex: str) -> bool:
    """Whether ``signature_hex`` is the signature of ``data`` by ``public_key_hex``; False for a malformed key or
    signature as for a wrong one."""
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        public.verify(bytes.fromhex(signature_hex), data)
    except (ValueError, InvalidSignature):
        return False
    return True


__all__ = ["BundleKey", "key_id_of", "verify"]
