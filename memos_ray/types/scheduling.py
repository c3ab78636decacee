"""The MemScheduler: usage (kept beside the versions, never in them), its decisions, sessions, and what lives
where."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from memos_ray.types.base import Id, Strict, UtcDatetime
from memos_ray.types.memory import MemoryItem


class UsageEvent(Strict):
    """What one search or chat did with one cube's memories, as the ingress saw it (recorded off the path)."""

    cube_id: str
    agent: str
    at: UtcDatetime
    chat: bool = Field(False, description="a chat ran on this cube")
    retrieved: list[str] = Field(default_factory=list, description="memory ids a search or retrieval returned")
    prompt: list[str] = Field(default_factory=list, description="memory ids prefilled in a chat's prompt")
    prefix: list[str] = Field(default_factory=list, description="memory ids a chat was served from a cached prefix")


class MemoryUsage(Strict):
    memory_id: str
    retrievals: int = 0
    prompt_uses: int = 0
    prefix_uses: int = 0
    last_used_at: datetime | None = None
    agents: list[str] = Field(default_factory=list, description="the agents that used it (most recent first, bounded)")
    heat: float = Field(0.0, description="uses decayed over the scheduler's window, as of now")


class CubeUsage(Strict):
    cube_id: str
    chats: int = 0
    last_chat_at: datetime | None = None
    working_set: list[str] = Field(default_factory=list, description="memory ids the policy keeps as a KV prefix")
    churn: int = Field(0, description="memories that entered or left the working set, over its life")
    memories: list[MemoryUsage] = Field(default_factory=list, description="most used first")


class WorkingSet(Strict):
    """What a cube answers when the policy hands it a ranking: the working set it now holds."""

    cube_id: str
    items: list[MemoryItem] = Field(description="the working set's memories (latest active versions), in prefix order")
    pinned: list[MemoryItem] = Field(default_factory=list)
    tokens: int = Field(0, description="the working set's estimated tokens as prefix lines")
    changed: bool = Field(description="the set differs from the one the cube held")
    reason: str = Field("", description="why the set is empty, when it is")


class DecisionKind(StrEnum):
    promote = "promote"  # a working set's KV prefix built ahead of need
    skip = "skip"  # a move considered and not made (below break-even, over a budget, nothing to hold)
    demote = "demote"  # a KV cache left the workers' memory (it stays on disk)
    evict_disk = "evict_disk"  # a KV cache left the disk
    prefetch = "prefetch"  # a session's prefix and adapter warmed on the worker that will serve it
    policy = "policy"  # an operator turned the policy on or off (the last one holds across restarts)
    expire = "expire"  # memories past their kind's time to live
    archive = "archive"  # memories unused for the cube's archive period
    merge = "merge"  # near-duplicates merged into the oldest of them
    retrain = "retrain"  # an adapter that learned a purged memory, trained again without it
    train = "train"  # a cube with enough stable, used facts and no adapter (or a stale one) gets one


DecisionInput = str | int | float | bool | None


class Decision(Strict):
    seq: int
    at: datetime
    kind: DecisionKind
    reason: str
    cube_id: str | None = None
    key: str | None = None
    worker: int | None = None
    inputs: dict[str, DecisionInput] = Field(default_factory=dict, description="the figures the decision rested on")


class SchedulerPolicy(Strict):
    enabled: bool = Field(description="False: no working sets, prefetch or demotion (pinned prefixes only)")


class DecisionQuery(Strict):
    cube_id: Id | None = Field(
        None, description="one cube's decisions (its readers may ask); None: all (administrators)"
    )
    kind: DecisionKind | None = None
    after_seq: int | None = Field(None, ge=0, description="decisions after this one, oldest first; None: the newest")
    limit: int = Field(100, ge=1, le=1_000)


class DecisionPage(Strict):
    decisions: list[Decision]
    next_seq: int = Field(description="pass as after_seq for the decisions that follow")


class SessionCreate(Strict):
    cube_ids: list[Id] = Field(min_length=1, max_length=8)
    use_parametric_memory: bool = Field(True, description="also warm the first cube's active adapter")


WarmStatus = Literal["built", "held", "loaded", "nothing", "skipped"]


class Warmed(Strict):
    cube_id: str
    status: WarmStatus = Field(
        description="built (computed now), held (a worker had it), loaded (from disk), nothing (no pinned memory "
        "and no working set yet), skipped (below break-even or over a budget; see reason)"
    )
    key: str | None = None
    tokens: int = 0
    worker: int | None = None
    adapter: str | None = None
    compute_ms: float = Field(0.0, description="what building or loading the prefix took the worker")
    reason: str = ""


class Session(Strict):
    session_id: str
    agent: str
    cube_ids: list[str]
    started_at: datetime
    warmed: list[Warmed]


class CachePlace(Strict):
    """One KV cache the Scheduler knows, and where it lives."""

    key: str
    cube_ids: list[str]
    tokens: int
    bytes: int
    workers: list[int] = Field(description="workers holding it in memory")
    last_used_at: datetime | None = None
    in_use: int = Field(0, description="chats placed on it that have not ended")
    built_for: Literal["chat", "policy"] = "chat"


class WorkerKV(Strict):
    worker: int
    kv_bytes: int
    kv_budget: int
    resident: int
    adapters: list[str] = Field(default_factory=list)


class KVPlaces(Strict):
    """What the Scheduler knows of every KV cache and worker, for the policy and for status."""

    caches: list[CachePlace]
    disk: dict[str, int] = Field(description="cache key -> bytes of its file on disk")
    workers: list[WorkerKV]
    break_even_tokens: int


class SchedulerStatus(Strict):
    enabled: bool
    break_even_tokens: int = Field(description="below this a prefix is not worth a KV cache (measured at start)")
    workers: list[WorkerKV]
    caches: list[CachePlace]
    disk_bytes: int
    disk_budget: int
    build_s_window: float = Field(description="seconds spent building ahead of need in the last minute")
    build_s_budget: float = Field(description="what the build CPU share allows per minute")
    decisions: int
    cubes_with_working_sets: int


class LifecycleSweep(Strict):
    """What one cube's lifecycle sweep did (every move is a new version; the ids stay)."""

    cube_id: str
    expired: list[str] = Field(default_factory=list)
    archived: list[str] = Field(default_factory=list)
    merged: dict[str, str] = Field(default_factory=dict, description="near-duplicate -> the memory it merged into")
    checked: int = Field(0, description="memories compared for near-duplicates")
    merge_seq: int = Field(0, description="memories written up to this seq are checked for near-duplicates")
    seq: int = Field(0, description="the cube's seq after the sweep: a later write makes it due again")
    next_due: float | None = Field(None, description="epoch seconds when a memory next expires or falls due")
    took_ms: float = 0.0

    @property
    def moved(self) -> list[str]:
        return [*self.expired, *self.archived, *self.merged]


class SweepResult(Strict):
    decisions: int = Field(description="decisions the sweep recorded")
    lifecycle: list[LifecycleSweep] = Field(default_factory=list, description="what each cube's lifecycle sweep did")
    training_job: str | None = Field(None, description="the training job parametric promotion started, if any")
