"""Request builders for the MemScheduler (sessions, decisions, usage, the policy switch), used by both SDK
clients in ``memos_ray/client/clients.py``."""

from __future__ import annotations

from collections.abc import Sequence

from memos_ray.client._request import Call, body_of, given, seg
from memos_ray.types import (
    CubeUsage,
    DecisionKind,
    DecisionPage,
    DecisionQuery,
    SchedulerPolicy,
    Session,
    SessionCreate,
    SweepResult,
)


class SchedulerCalls:
    """Request builders for the MemScheduler."""

    @staticmethod
    def open_session(cube_ids: Sequence[str], *, use_parametric_memory: bool | None = None) -> Call[Session]:
        """Start working on these cubes: their KV prefix and adapter are warmed on the worker that will serve."""
        fields = given(cube_ids=list(cube_ids), use_parametric_memory=use_parametric_memory)
        return Call("POST", "/v1/sessions", Session.model_validate, json=body_of(SessionCreate, fields))

    @staticmethod
    def decisions(
        *,
        cube_id: str | None = None,
        kind: DecisionKind | str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> Call[DecisionPage]:
        """What the MemScheduler decided and why (one cube's, or all for administrators)."""
        query = body_of(DecisionQuery, given(cube_id=cube_id, kind=kind, after_seq=after_seq, limit=limit))
        return Call("GET", "/v1/scheduler/decisions", DecisionPage.model_validate, params=list(query.items()))

    @staticmethod
    def cube_usage(cube_id: str, *, limit: int | None = None) -> Call[CubeUsage]:
        """How the cube's memories are used, most used first, and its working set."""
        params = list(given(limit=limit).items())
        return Call("GET", f"/v1/cubes/{seg(cube_id)}/usage", CubeUsage.model_validate, params=params)

    @staticmethod
    def set_scheduler_policy(enabled: bool) -> Call[SchedulerPolicy]:
        return Call("PUT", "/v1/scheduler/policy", SchedulerPolicy.model_validate, json={"enabled": enabled})

    @staticmethod
    def sweep_scheduler() -> Call[SweepResult]:
        """One sweep of the policy now (administrators)."""
        return Call("POST", "/v1/scheduler/sweep", SweepResult.model_validate)
