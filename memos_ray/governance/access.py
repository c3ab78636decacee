"""Access control on a cube: the owner and the grants decide a caller's role.

Roles are ordered ``read < write < admin``. The owner holds admin; a grant to any of the
caller's subjects (itself, its owning user or team, their teams) gives that role; a system
administrator holds admin everywhere. A caller with no role at all is told the cube does
not exist (404), so cubes are not discoverable across tenants; one with too small a role
is told which role it lacks (403).
"""

from __future__ import annotations

from memos_ray.errors import CubeNotFound, Forbidden
from memos_ray.types import Caller, CubeMeta, Role

RANK: dict[Role, int] = {Role.read: 1, Role.write: 2, Role.admin: 3}


def role_on(meta: CubeMeta, caller: Caller) -> Role | None:
    if caller.admin or meta.owner in caller.subjects:
        return Role.admin
    roles = [g.role for g in meta.grants if g.principal in caller.subjects]
    return max(roles, key=RANK.__getitem__) if roles else None


def require(meta: CubeMeta, caller: Caller, need: Role) -> Role:
    role = role_on(meta, caller)
    if role is None:
        raise CubeNotFound(f"cube {meta.id} not found", {"cube_id": meta.id})
    if RANK[role] < RANK[need]:
        raise Forbidden(
            f"{caller.principal} holds {role} on cube {meta.id}; this needs {need}",
            {"cube_id": meta.id, "role": role, "needs": need},
        )
    return role


def can(meta: CubeMeta, caller: Caller, need: Role) -> bool:
    role = role_on(meta, caller)
    return role is not None and RANK[role] >= RANK[need]
