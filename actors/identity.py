"""The Identity actor: authenticates every request and manages principals and API keys.

One detached actor per namespace owns the identity store (SQLite under ``data_dir``). Every
request's key is checked here, with no cache in the ingress, so a revoked key or a disabled
principal is refused on the very next request, whichever Serve replica receives it.

Who may manage whom: an administrator, anyone; a user, itself and its own agents (create
them, issue and revoke their keys). Teams and membership are the administrators'.
"""

from __future__ import annotations

from actors.calls import actor_class
from memos_ray.config import MemosConfig
from memos_ray.errors import Forbidden, KeyNotFound, PrincipalNotFound
from memos_ray.governance.identity import IdentityStore
from memos_ray.types import (
    ApiKeyInfo,
    Caller,
    IssuedKey,
    KeyCreate,
    Principal,
    PrincipalCreate,
    PrincipalKind,
    PrincipalUpdate,
)

IDENTITY_NAME = "memos_identity"


class Identity:
    def __init__(self, config: MemosConfig) -> None:
        data = config.storage.data_dir
        self.store = IdentityStore(data / "identity.db", config.storage.database_uri)
        self.store.bootstrap(config.governance.admin_key_sha256, data / "admin.key")

    def ready(self) -> int:
        return len(self.store.principals)

    def authenticate(self, key: str | None) -> Caller:
        return self.store.authenticate(key)

    def exists(self, principal_id: str) -> bool:
        return principal_id in self.store.principals

    # ------------------------------------------------------------ policy

    def _manageable(self, caller: Caller, principal_id: str) -> Principal:
        """The principal, if ``caller`` may manage it; a principal it may not manage is 'not found'."""
        principal = self.store.principals.get(principal_id)
        if principal is not None and (
            caller.admin or principal.id == caller.principal or principal.parent == caller.principal
        ):
            return principal
        raise PrincipalNotFound(f"principal {principal_id} not found", {"principal": principal_id})

    # ------------------------------------------------------------ principals

    def create_principal(self, req: PrincipalCreate, caller: Caller) -> Principal:
        if not caller.admin:
            own_agent = req.kind == PrincipalKind.agent and req.parent == caller.principal and not req.admin
            if not own_agent or caller.kind != PrincipalKind.user or req.teams:
                raise Forbidden(
                    "only an administrator creates users, teams and team membership; a user may create its own agents",
                    {"principal": req.id},
                )
        return self.store.create_principal(req, caller.principal)

    def get_principal(self, principal_id: str, caller: Caller) -> Principal:
        return self._manageable(caller, principal_id)

    def list_principals(self, caller: Caller) -> list[Principal]:
        every = sorted(self.store.principals.values(), key=lambda p: (p.created_at, p.id))
        if caller.admin:
            return every
        return [p for p in every if p.id == caller.principal or p.parent == caller.principal]

    def update_principal(self, principal_id: str, req: PrincipalUpdate, caller: Caller) -> Principal:
        self._manageable(caller, principal_id)
        if not caller.admin and (req.teams is not None or principal_id == caller.principal):
            raise Forbidden("a user may disable or enable its agents; the rest is for administrators")
        return self.store.update_principal(principal_id, req)

    # ------------------------------------------------------------ keys

    def issue_key(self, req: KeyCreate, caller: Caller) -> IssuedKey:
        if caller.kind == PrincipalKind.agent:  # a leaked agent key must not be able to mint its successors
            raise Forbidden(
                "agents cannot issue keys; their user or an administrator does", {"principal": req.principal}
            )
        self._manageable(caller, req.principal)
        return self.store.issue_key(req, caller.principal)

    def list_keys(self, caller: Caller, principal: str | None = None) -> list[ApiKeyInfo]:
        keys = sorted(self.store.keys.values(), key=lambda k: (k.created_at, k.key_id))
        if principal is not None:
            self._manageable(caller, principal)
            return [k for k in keys if k.principal == principal]
        mine = {p.id for p in self.list_principals(caller)}
        return [k for k in keys if k.principal in mine]

    def revoke_key(self, key_id: str, caller: Caller) -> ApiKeyInfo:
        info = self.store.keys.get(key_id)
        if info is None:
            raise KeyNotFound(f"key {key_id} not found", {"key_id": key_id})
        try:
            self._manageable(caller, info.principal)
        except PrincipalNotFound:
            raise KeyNotFound(f"key {key_id} not found", {"key_id": key_id}) from None
        return self.store.revoke_key(key_id)


IdentityActor = actor_class(Identity, max_restarts=-1, max_concurrency=1)
