"""Request builders for the governance routes (identities, keys, sharing, audit), used by both
SDK clients in ``memos_ray/client/clients.py`` the same way as the memory builders there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter

from memos_ray.client._request import Call, Params, body_of, given, seg
from memos_ray.types import (
    ApiKeyInfo,
    AuditPage,
    AuditQuery,
    AuditVerification,
    Caller,
    CubeMeta,
    CubeQuotas,
    CubeUpdate,
    IssuedKey,
    KeyCreate,
    LifecyclePolicy,
    Principal,
    PrincipalCreate,
    PrincipalKind,
    PrincipalUpdate,
    Result,
    Role,
)

_principals = TypeAdapter(list[Principal]).validate_python
_keys = TypeAdapter(list[ApiKeyInfo]).validate_python


class GovernanceCalls:
    @staticmethod
    def whoami() -> Call[Caller]:
        """The principal of this client's key, with the subjects its grants may name."""
        return Call("GET", "/v1/whoami", Caller.model_validate)

    @staticmethod
    def create_principal(
        id: str,
        kind: PrincipalKind | str = PrincipalKind.user,
        *,
        parent: str | None = None,
        teams: Sequence[str] | None = None,
        admin: bool | None = None,
    ) -> Call[Principal]:
        """A user, team (administrators) or agent (administrators, or a user for its own agents)."""
        fields = given(
            id=id, kind=PrincipalKind(kind), parent=parent, teams=list(teams) if teams else None, admin=admin
        )
        return Call("POST", "/v1/principals", Principal.model_validate, json=body_of(PrincipalCreate, fields))

    @staticmethod
    def list_principals() -> Call[list[Principal]]:
        return Call("GET", "/v1/principals", _principals)

    @staticmethod
    def update_principal(
        principal_id: str, *, teams: Sequence[str] | None = None, disabled: bool | None = None
    ) -> Call[Principal]:
        fields = given(teams=list(teams) if teams is not None else None, disabled=disabled)
        path = f"/v1/principals/{seg(principal_id)}"
        return Call("PATCH", path, Principal.model_validate, json=body_of(PrincipalUpdate, fields))

    @staticmethod
    def issue_key(principal: str, *, label: str = "", expires_at: datetime | None = None) -> Call[IssuedKey]:
        """A new API key for ``principal``: ``.key`` is shown this once."""
        body = body_of(KeyCreate, given(principal=principal, label=label, expires_at=expires_at))
        return Call("POST", "/v1/keys", IssuedKey.model_validate, json=body)

    @staticmethod
    def list_keys(principal: str | None = None) -> Call[list[ApiKeyInfo]]:
        params: Params = [] if principal is None else [("principal", principal)]
        return Call("GET", "/v1/keys", _keys, params)

    @staticmethod
    def revoke_key(key_id: str) -> Call[ApiKeyInfo]:
        """Revoke a key: it fails from the next request on."""
        return Call("DELETE", f"/v1/keys/{seg(key_id)}", ApiKeyInfo.model_validate)

    @staticmethod
    def update_cube(
        cube_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        quotas: CubeQuotas | Mapping[str, Any] | None = None,
        lifecycle: LifecyclePolicy | Mapping[str, Any] | None = None,
        kv_mode: str | None = None,
    ) -> Call[CubeMeta]:
        """Change a cube's fields (admin role; None = keep). ``lifecycle`` replaces its lifecycle policy whole;
        ``kv_mode`` (off, prefix, compose; ``"default"``: the server's) is how its chats use activation memory."""
        fields = given(name=name, description=description, quotas=quotas, lifecycle=lifecycle, kv_mode=kv_mode)
        body = body_of(CubeUpdate, fields)
        return Call("PATCH", f"/v1/cubes/{seg(cube_id)}", CubeMeta.model_validate, json=body)

    @staticmethod
    def share(cube_id: str, principal: str, role: Role | str = Role.read) -> Call[CubeMeta]:
        """Give a user, agent or team a role (read, write, admin) on a cube."""
        path = f"/v1/cubes/{seg(cube_id)}/grants/{seg(principal)}"
        return Call("PUT", path, CubeMeta.model_validate, json={"role": Role(role).value})

    @staticmethod
    def unshare(cube_id: str, principal: str) -> Call[CubeMeta]:
        return Call("DELETE", f"/v1/cubes/{seg(cube_id)}/grants/{seg(principal)}", CubeMeta.model_validate)

    @staticmethod
    def audit(
        cube_id: str | None = None,
        *,
        principal: str | None = None,
        action: str | None = None,
        result: Result | None = None,
        memory_id: str | None = None,
        request_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> Call[AuditPage]:
        """Audit records: one cube's (its admins), or everything (administrators)."""
        q = AuditQuery.model_validate(
            given(
                principal=principal,
                action=action,
                result=result,
                memory_id=memory_id,
                request_id=request_id,
                since=since,
                until=until,
                after_seq=after_seq,
                limit=limit,
            )
        )
        params: Params = [(k, str(v)) for k, v in q.model_dump(mode="json", exclude_none=True).items()]
        path = "/v1/audit" if cube_id is None else f"/v1/cubes/{seg(cube_id)}/audit"
        return Call("GET", path, AuditPage.model_validate, params)

    @staticmethod
    def verify_audit() -> Call[AuditVerification]:
        """Recompute the audit log's hash chain (administrators)."""
        return Call("GET", "/v1/audit/verify", AuditVerification.model_validate)
