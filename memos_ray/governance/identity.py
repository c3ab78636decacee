"""Identities and API keys: who is calling.

Principals are users, agents and teams. An agent belongs to a user or a team and acts for
it: its grants are its own plus its owner's. A user or agent may be a member of teams,
and a grant to a team reaches every member. Keys belong to users and agents; a key is
shown once when issued and stored as its SHA-256 (a key carries 256 random bits, so a
fast hash is enough: there is nothing to brute-force). Revoking a key, or disabling a
principal (and with it its agents), takes effect on the next request.

The store is one SQLite file under ``data_dir`` (or tables in the PostgreSQL database that
``storage.database_uri`` names), owned by the Identity actor; every change is committed before it is
visible in memory.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from pathlib import Path

from memos_ray.database import Schema, open_database, upsert
from memos_ray.errors import Conflict, InvalidInput, KeyNotFound, PrincipalNotFound, Unauthenticated
from memos_ray.types import (
    ApiKeyInfo,
    Caller,
    IssuedKey,
    KeyCreate,
    Principal,
    PrincipalCreate,
    PrincipalKind,
    PrincipalUpdate,
    utcnow,
)

KEY_PREFIX = "mrk_"
ADMIN = "admin"  # the bootstrap administrator's principal id
LEGACY_OWNER = "local"  # the owner of cubes made before identities existed (handed to ADMIN); never a principal


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, key): the id is public (shown in lists and the audit log), the key is secret."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str | None) -> str | None:
    """The public id inside a memos-ray key (never the secret): which key was refused, for the audit log."""
    if key and key.startswith(KEY_PREFIX) and len(key) > len(KEY_PREFIX) + 12:
        return key[len(KEY_PREFIX) : len(KEY_PREFIX) + 12]
    return None


_SCHEMA = Schema("""
CREATE TABLE IF NOT EXISTS principals (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (key_id TEXT PRIMARY KEY, hash TEXT UNIQUE NOT NULL, doc TEXT NOT NULL);
""")


class IdentityStore:
    def __init__(self, path: Path, uri: str | None = None) -> None:
        """``path``: the SQLite file; ``uri``: a PostgreSQL database instead."""
        self._db = open_database(path, _SCHEMA, uri)
        self._lock = threading.Lock()
        self.principals: dict[str, Principal] = {
            row[0]: Principal.model_validate_json(row[1]) for row in self._db.execute("SELECT id, doc FROM principals")
        }
        self.keys: dict[str, ApiKeyInfo] = {}
        self._by_hash: dict[str, str] = {}
        for key_id, digest, doc in self._db.execute("SELECT key_id, hash, doc FROM api_keys"):
            self.keys[key_id] = ApiKeyInfo.model_validate_json(doc)
            self._by_hash[digest] = key_id

    # ------------------------------------------------------------ bootstrap

    def bootstrap(self, admin_key_sha256: str | None, key_file: Path) -> str | None:
        """Make sure the administrator exists and has a key. With ``admin_key_sha256`` (from the
        environment) that key is registered; otherwise a key is generated once, written to
        ``key_file`` (0600) and returned. Returns the new key, or None when nothing was generated."""
        if ADMIN not in self.principals:
            self._put_principal(
                Principal(id=ADMIN, kind=PrincipalKind.user, admin=True, created_at=utcnow(), created_by=ADMIN)
            )
        if admin_key_sha256 is not None:
            if admin_key_sha256 not in self._by_hash:
                info = ApiKeyInfo(
                    key_id=f"env-{admin_key_sha256[:8]}",
                    principal=ADMIN,
                    label="MEMOS_RAY_ADMIN_KEY",
                    created_at=utcnow(),
                    created_by=ADMIN,
                )
                self._put_key(info, admin_key_sha256)
            return None
        live = [k for k in self.keys.values() if k.principal == ADMIN and k.revoked_at is None]
        if live and key_file.exists():
            return None
        key_id, key = new_key()
        self._put_key(
            ApiKeyInfo(key_id=key_id, principal=ADMIN, label="bootstrap", created_at=utcnow(), created_by=ADMIN),
            hash_key(key),
        )
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.chmod(0o600)
        key_file.write_text(key + "\n")
        return key

    # ------------------------------------------------------------ principals

    def _put_principal(self, principal: Principal) -> None:
        with self._lock:
            self._db.execute(upsert("principals", ["id", "doc"], ["id"]), (principal.id, principal.model_dump_json()))
        self.principals[principal.id] = principal

    def principal(self, principal_id: str) -> Principal:
        found = self.principals.get(principal_id)
        if found is None:
            raise PrincipalNotFound(f"principal {principal_id} not found", {"principal": principal_id})
        return found

    def create_principal(self, req: PrincipalCreate, created_by: str) -> Principal:
        if req.id == LEGACY_OWNER:
            raise InvalidInput(f"{LEGACY_OWNER!r} is reserved", {"principal": req.id})
        if req.id in self.principals:
            raise Conflict(f"principal {req.id} already exists", {"principal": req.id})
        if req.kind == PrincipalKind.agent:
            if req.parent is None:
                raise InvalidInput("an agent needs a parent: the user or team it belongs to")
            if self.principal(req.parent).kind == PrincipalKind.agent:
                raise InvalidInput("an agent belongs to a user or a team, not to another agent")
        elif req.parent is not None:
            raise InvalidInput(f"a {req.kind} has no parent")
        if req.kind == PrincipalKind.team and (req.teams or req.admin):
            raise InvalidInput("a team has no teams and cannot be an administrator")
        self._check_teams(req.teams)
        principal = Principal(**req.model_dump(), created_at=utcnow(), created_by=created_by)
        self._put_principal(principal)
        return principal

    def _check_teams(self, teams: list[str]) -> None:
        for team in teams:
            if self.principal(team).kind != PrincipalKind.team:
                raise InvalidInput(f"{team} is not a team", {"principal": team})

    def update_principal(self, principal_id: str, req: PrincipalUpdate) -> Principal:
        current = self.principal(principal_id)
        changes = req.model_dump(exclude_none=True)
        if "teams" in changes:
            self._check_teams(changes["teams"])
        updated = current.model_copy(update=changes)
        self._put_principal(updated)
        return updated

    # ------------------------------------------------------------ keys

    def _put_key(self, info: ApiKeyInfo, digest: str) -> None:
        with self._lock:
            self._db.execute(
                upsert("api_keys", ["key_id", "hash", "doc"], ["key_id"]),
                (info.key_id, digest, info.model_dump_json()),
            )
        self.keys[info.key_id] = info
        self._by_hash[digest] = info.key_id

    def issue_key(self, req: KeyCreate, created_by: str) -> IssuedKey:
        principal = self.principal(req.principal)
        if principal.kind == PrincipalKind.team:
            raise InvalidInput("keys belong to users and agents; a team acts through its agents")
        key_id, key = new_key()
        info = ApiKeyInfo(
            key_id=key_id,
            principal=principal.id,
            label=req.label,
            created_at=utcnow(),
            created_by=created_by,
            expires_at=req.expires_at,
        )
        self._put_key(info, hash_key(key))
        return IssuedKey(key=key, info=info)

    def key(self, key_id: str) -> ApiKeyInfo:
        found = self.keys.get(key_id)
        if found is None:
            raise KeyNotFound(f"key {key_id} not found", {"key_id": key_id})
        return found

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        info = self.key(key_id)
        if info.revoked_at is not None:
            return info
        revoked = info.model_copy(update={"revoked_at": utcnow()})
        digest = next(h for h, k in self._by_hash.items() if k == key_id)
        self._put_key(revoked, digest)
        return revoked

    # ------------------------------------------------------------ authentication

    def authenticate(self, key: str | None) -> Caller:
        if not key:
            raise Unauthenticated("an API key is required: send 'Authorization: Bearer <key>'")
        key_id = self._by_hash.get(hash_key(key))
        info = self.keys.get(key_id) if key_id else None
        if info is None:
            raise Unauthenticated("unknown API key")
        if info.revoked_at is not None:
            raise Unauthenticated(f"API key {info.key_id} was revoked", {"key_id": info.key_id})
        if info.expires_at is not None and info.expires_at <= utcnow():
            raise Unauthenticated(f"API key {info.key_id} expired", {"key_id": info.key_id})
        principal = self.principal(info.principal)
        owner = self.principals.get(principal.parent) if principal.parent else None
        if principal.disabled or (owner is not None and owner.disabled):
            raise Unauthenticated(f"principal {principal.id} is disabled", {"key_id": info.key_id})
        subjects = [principal.id, *principal.teams]
        if owner is not None:
            subjects += [owner.id, *owner.teams]
        return Caller(
            principal=principal.id,
            kind=principal.kind,
            subjects=list(dict.fromkeys(subjects)),
            admin=principal.admin,  # administration is not delegated to agents
            key_id=info.key_id,
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
