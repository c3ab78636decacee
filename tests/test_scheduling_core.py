"""The MemScheduler's core without Ray: usage beside the versions (durable), the decision log, the policy's
rules, a cube's working set and the prompt layout that uses it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from memos_ray.activation.prompt import cubes_kv_mode, plan_chat, prefix_plan
from memos_ray.config import SchedulerConfig, SearchConfig, StorageConfig
from memos_ray.plaintext.cube import MemCube
from memos_ray.scheduling.decisions import DecisionLog
from memos_ray.scheduling.policy import BuildBudget, demotions
from memos_ray.scheduling.usage import UsageStore
from memos_ray.types import (
    CachePlace,
    ChatMessage,
    ChatRequest,
    CubeMeta,
    DecisionKind,
    MemoryCreate,
    MemoryItem,
    Recall,
    SearchHit,
    UsageEvent,
    utcnow,
)


def event(cube: str, agent: str, at_s: float, **kw: object) -> UsageEvent:
    return UsageEvent(cube_id=cube, agent=agent, at=utcnow() + timedelta(seconds=at_s), **kw)  # type: ignore[arg-type]


def test_usage_is_counted_decayed_and_survives_a_restart(tmp_path: Path, database_uri: str | None) -> None:
    path = tmp_path / "usage.sqlite"
    usage = UsageStore(path, 60, database_uri)
    usage.record([event("c", "ann", -120, retrieved=["old"])])  # two half-lives ago
    usage.record(
        [
            event("c", "ann", 0, chat=True, retrieved=["a", "b"], prompt=["a"], prefix=["b"]),
            event("c", "bob", 0, retrieved=["a"]),
        ]
    )
    ranked = dict(usage.ranked("c"))
    assert next(iter(ranked)) == "a" and ranked["a"] == pytest.approx(2.0, abs=0.01)
    assert ranked["old"] == pytest.approx(0.25, abs=0.01)
    assert [m for m, _ in usage.ranked("c", min_heat=0.5)] == ["a", "b"]
    usage.record([event("c", "ann", 0, chat=True, prefix=["b"])])  # carried in a prefix: counted, no heat
    assert dict(usage.ranked("c"))["b"] == pytest.approx(1.0, abs=0.01)
    assert usage.set_working_set("c", ["a", "b"]) == 2
    assert usage.set_working_set("c", ["a", "old"]) == 2  # b left, old came in
    usage.close()

    again = UsageStore(path, 60, database_uri)
    cube = again.cube("c")
    a = next(m for m in cube.memories if m.memory_id == "a")
    assert (a.retrievals, a.prompt_uses, a.prefix_uses, a.agents) == (2, 1, 0, ["bob", "ann"])
    b = next(m for m in cube.memories if m.memory_id == "b")
    assert (b.retrievals, b.prefix_uses) == (1, 2)
    assert (cube.chats, cube.working_set, cube.churn) == (2, ["a", "old"], 4)
    assert again.last_chat_of("ann") is not None and again.last_chat_of("bob") is None
    assert again.active_cubes(since=utcnow().timestamp() - 10) == ["c"]

    again.forget("c", ["a"])
    assert "a" not in dict(again.ranked("c")) and again.cube("c").working_set == ["old"]
    again.forget("c")
    again.close()
    assert UsageStore(path, 60, database_uri).cube("c").memories == []


def test_decisions_are_kept_and_queried(tmp_path: Path, database_uri: str | None) -> None:
    log = DecisionLog(tmp_path / "d.sqlite", 100, database_uri)
    for i in range(5):
        log.add(
            DecisionKind.promote if i % 2 else DecisionKind.demote, f"why {i}", cube_id=f"c{i % 2}", inputs={"i": i}
        )
    page = log.query(limit=2)
    assert [d.seq for d in page.decisions] == [4, 5]  # the newest, oldest first
    after = log.query(after_seq=1, limit=2)
    assert [d.seq for d in after.decisions] == [2, 3] and after.next_seq == 3
    promoted = log.query(kind=DecisionKind.promote)
    assert {d.cube_id for d in promoted.decisions} == {"c1"} and promoted.decisions[0].inputs == {"i": 1}
    log.close()
    assert DecisionLog(tmp_path / "d.sqlite", 100, database_uri).query(cube_id="c0").decisions[-1].reason == "why 4"


def place(key: str, idle_s: float, workers: list[int], in_use: int = 0) -> CachePlace:
    return CachePlace(
        key=key,
        cube_ids=["c"],
        tokens=100,
        bytes=1000,
        workers=workers,
        last_used_at=utcnow() - timedelta(seconds=idle_s),
        in_use=in_use,
    )


def test_demotion_takes_cold_caches_off_workers_then_disk_never_one_in_use() -> None:
    cfg = SchedulerConfig(kv_idle_s=60, disk_idle_s=600, disk_budget_mb=1)
    caches = [
        place("hot", 5, [0]),
        place("cold", 120, [0, 1]),
        place("frozen", 900, [], 0),
        place("busy", 5_000, [0], in_use=1),
    ]
    disk = {"hot": 1000, "cold": 1000, "frozen": 1000, "busy": 1000}
    moves = {(m.kind, m.key) for m in demotions(caches, disk, utcnow(), cfg)}
    assert moves == {(DecisionKind.demote, "cold"), (DecisionKind.evict_disk, "frozen")}
    # over the disk budget: the least recently used go first, until it fits
    over = {k: 400_000 for k in disk}
    moves = [(m.kind, m.key) for m in demotions(caches, over, utcnow(), cfg) if m.kind == DecisionKind.evict_disk]
    assert moves == [(DecisionKind.evict_disk, "frozen"), (DecisionKind.evict_disk, "cold")]


def test_the_build_budget_is_a_share_of_a_minute() -> None:
    budget = BuildBudget(share=0.1, workers=2)  # 12 s a minute
    assert budget.allows(0.0)
    budget.spend(13.0, 0.0)
    assert not budget.allows(1.0) and budget.allows(61.0)


def test_a_cube_holds_the_working_set_that_fits_and_recalls_it(storage: StorageConfig) -> None:
    now = utcnow()
    cube = MemCube(CubeMeta(id="ws", created_at=now, updated_at=now), storage, SearchConfig(), 4)
    texts = ["alpha " * 10, "beta " * 10, "gamma " * 10, "pinned fact"]
    items = cube.add(
        [MemoryCreate(text=t, tags=["pinned"] if "pinned" in t else []) for t in texts],
        np.eye(4, dtype=np.float32),
        "t",
    ).items
    ids = [i.id for i in items]
    ws = cube.set_working_set([ids[2], ids[3], ids[0], ids[1]], token_budget=55, pinned_tag="pinned")
    in_order = [m.id for m in sorted((items[0], items[2]), key=lambda m: (m.created_at, m.id))]
    assert [m.id for m in ws.items] == in_order  # the hottest that fit, pinned aside, in prefix order
    assert ws.changed and [m.id for m in ws.pinned] == [ids[3]] and ws.tokens > 0
    assert not cube.set_working_set([ids[2], ids[0]], 55, "pinned").changed
    assert [m.id for m in cube.recall("pinned", None, None).working] == in_order
    cube.delete(ids[0], None, "t")  # a deleted memory never reaches a prefix
    assert [m.id for m in cube.recall("pinned", None, None).working] == [ids[2]]
    small = cube.set_working_set([ids[2]], 55, "pinned", min_tokens=1_000)
    assert small.items == [] and "break-even" in small.reason and cube.working == []
    cube.close()


def item(i: int, text: str) -> MemoryItem:
    now = utcnow() + timedelta(seconds=i)
    return MemoryItem(id=f"m{i}", cube_id="c", version=1, text=text, created_at=now, updated_at=now)


def test_the_prompt_rule_uses_a_working_set_only_when_retrieval_falls_in_it() -> None:
    pinned, working = [item(0, "Pinned.")], [item(1, "Hot one."), item(2, "Hot two.")]
    other = item(3, "Cold.")
    req = ChatRequest(cube_ids=["c"], messages=[ChatMessage(role="user", content="q?")], top_k=2)

    def hits(*ms: MemoryItem) -> list[SearchHit]:
        return [SearchHit(memory=m, score=1.0 - i / 10) for i, m in enumerate(ms)]

    inside = plan_chat(req, pinned, working, hits(working[1], other), None, "quoted", quote_top=5)
    assert [m.id for m in inside.in_prefix] == ["m0", "m1", "m2"]
    # the same prefix the MemScheduler builds ahead of need (same text, same cache key)
    assert inside.plan.prefix_text == prefix_plan(["c"], [*pinned, *working], None).prefix_text
    quoted = inside.plan.messages[-1].content
    assert quoted.startswith("Question: q?") and "1. Hot two." in quoted and "2. Cold." in quoted
    assert quoted.endswith("answer the question: q?") and [m.id for m in inside.in_prompt] == ["m2", "m3"]

    outside = plan_chat(req, pinned, working, hits(other), None, "quoted")
    assert [m.id for m in outside.in_prefix] == ["m0"]  # no retrieved memory in the working set: pinned only
    # only the best quote_top are repeated next to the question; the prefix serves the rest
    top1 = plan_chat(req, pinned, working, hits(working[1], working[0]), None, "quoted", quote_top=1)
    assert [m.id for m in top1.in_prompt] == ["m2"] and "Hot one." not in top1.plan.messages[-1].content
    none = plan_chat(req, pinned, working, hits(working[1], working[0]), None, "quoted", quote_top=0)
    assert none.in_prompt == [] and none.plan.messages == req.messages
    # a hit the prefix lacks, past the quoted ones, goes in a system message before the conversation
    rest = plan_chat(req, pinned, working, hits(working[1], other), None, "quoted", quote_top=1)
    assert [m.id for m in rest.in_prompt] == ["m2", "m3"] and len(rest.plan.messages) == 2
    assert rest.plan.messages[0].content == "Relevant memories:\n- Cold." and rest.plan.messages[0].role == "system"
    assert "Cold." not in rest.plan.messages[-1].content and "1. Hot two." in rest.plan.messages[-1].content

    # the cubes' default KV mode, when they agree; otherwise the server's
    assert cubes_kv_mode([Recall(pinned=[], hits=[], kv_mode="compose")] * 2) == "compose"
    assert cubes_kv_mode([Recall(pinned=[], hits=[], kv_mode="compose"), Recall(pinned=[], hits=[])]) is None
    assert cubes_kv_mode([Recall(pinned=[], hits=[])]) is None

    system = plan_chat(req, pinned, working, hits(working[0], other), None, "system")
    assert system.plan.messages[0].content == "Relevant memories:\n- Cold." and system.in_prompt == [other]
    assert [m.id for m in system.used] == ["m0", "m1", "m2", "m3"]
