"""The MemScheduler through the real Serve app, Scheduler and model workers: usage recorded beside the
versions, a working set promoted ahead of need and served from its cache, a session's prefetch, demotion that
never touches a cache in use, every decision explained, and the switch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import ray

from actors.memscheduler import MEMSCHEDULER_NAME, MemScheduler
from actors.scheduler import SCHEDULER_NAME, Scheduler
from memos_ray.activation.prompt import prefix_plan
from memos_ray.types import MemoryItem
from serve.cli import commands as cli
from tests.helpers import bearer, wait_for_condition

FACTS = [
    "The quarterly planning meeting is held in the Atlas room.",
    "The Atlas room is on the fourth floor next to the kitchen.",
    "Maya books the Atlas room every Monday morning.",
    "The projector in the Atlas room needs an HDMI adapter.",
    "Planning notes are shared in the team wiki after each meeting.",
    "Leo brings pastries to the planning meeting.",
    "Budget reviews happen in the Orion room instead.",
    "The Orion room has no projector.",
]


@pytest.fixture(scope="module")
def http(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120, headers=bearer(api_key)) as client:
        yield client


@pytest.fixture(scope="module")
def admin(base_url: str, admin_key: str) -> Iterator[httpx.Client]:
    """The policy on for this module (the suite's config has it off, for deterministic prefixes elsewhere)."""
    with httpx.Client(base_url=base_url, timeout=120, headers=bearer(admin_key)) as client:
        assert client.put("/v1/scheduler/policy", json={"enabled": True}).json() == {"enabled": True}
        yield client
        assert client.put("/v1/scheduler/policy", json={"enabled": False}).json() == {"enabled": False}


@pytest.fixture(scope="module")
def planning(http: httpx.Client, admin: httpx.Client) -> dict[str, str]:
    assert http.post("/v1/cubes", json={"id": "sched-planning"}).status_code == 201
    r = http.post("/v1/cubes/sched-planning/memories/batch", json={"items": [{"text": t} for t in FACTS]})
    assert r.status_code == 201, r.text
    return {text: ref["memory_id"] for text, ref in zip(FACTS, r.json()["items"], strict=True)}


def chat(http: httpx.Client, cube: str, question: str, **options: Any) -> dict[str, Any]:
    body = {"cube_ids": [cube], "messages": [{"role": "user", "content": question}], "max_tokens": 8, **options}
    r = http.post("/v1/chat", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def usage(http: httpx.Client, cube: str) -> dict[str, Any]:
    r = http.get(f"/v1/cubes/{cube}/usage")
    assert r.status_code == 200, r.text
    return r.json()


def decisions(http: httpx.Client, cube: str, kind: str | None = None) -> list[dict[str, Any]]:
    r = http.get("/v1/scheduler/decisions", params={"cube_id": cube, **({"kind": kind} if kind else {})})
    assert r.status_code == 200, r.text
    return r.json()["decisions"]  # type: ignore[no-any-return]


def test_usage_is_recorded_beside_the_versions(http: httpx.Client, planning: dict[str, str]) -> None:
    atlas = planning[FACTS[0]]
    before = http.get(f"/v1/cubes/sched-planning/memories/{atlas}").json()
    for _ in range(3):
        assert http.post("/v1/search", json={"query": "Atlas room", "cube_ids": ["sched-planning"]}).status_code == 200

    def counted() -> bool:
        m = {u["memory_id"]: u for u in usage(http, "sched-planning")["memories"]}
        return m.get(atlas, {}).get("retrievals", 0) >= 3

    wait_for_condition(counted, timeout=20)
    m = {u["memory_id"]: u for u in usage(http, "sched-planning")["memories"]}[atlas]
    assert m["agents"] == ["tester"] and m["heat"] > 2 and m["last_used_at"]
    after = http.get(f"/v1/cubes/sched-planning/memories/{atlas}").json()
    assert after == before and "usage" not in after  # a version is never rewritten by use
    assert len(http.get(f"/v1/cubes/sched-planning/memories/{atlas}/history").json()) == 1


def test_a_working_set_is_built_ahead_of_need_and_served_from_its_cache(
    http: httpx.Client, admin: httpx.Client, planning: dict[str, str]
) -> None:
    q = "Where is the planning meeting held?"
    first = chat(http, "sched-planning", q)
    assert first["kv"]["tokens"] < 40  # no pinned memory, no working set yet: the system turn alone
    wait_for_condition(lambda: usage(http, "sched-planning")["chats"] >= 1, timeout=20)
    assert admin.post("/v1/scheduler/sweep").status_code == 200
    # the agent's first chat (after idle) promoted it at once (in the background: the sweep may find it busy)

    def promoted_list() -> list[dict[str, Any]]:
        return [d for d in decisions(http, "sched-planning") if d["kind"] in ("promote", "prefetch") and d["key"]]

    wait_for_condition(lambda: bool(promoted_list()), timeout=30)
    promoted = promoted_list()
    d = promoted[-1]
    assert d["inputs"]["memories"] >= 1 and "prefix built" in d["reason"], d
    working = usage(http, "sched-planning")["working_set"]
    assert working and set(working) <= set(planning.values())

    again = chat(http, "sched-planning", q)
    assert again["kv"]["key"] == d["key"] and again["kv"]["status"] in ("hit", "moved"), again["kv"]
    assert again["kv"]["tokens"] > first["kv"]["tokens"] + 20
    assert again["prefill_tokens"] == again["prompt_tokens"] - again["kv"]["tokens"]
    used = {m["memory_id"] for m in again["memories_used"]}
    assert set(working) <= used
    # the cached prefix is counted as such
    wait_for_condition(lambda: any(u["prefix_uses"] for u in usage(http, "sched-planning")["memories"]), timeout=20)


def test_a_session_warms_the_prefix_on_the_worker_that_serves_it(http: httpx.Client, admin: httpx.Client) -> None:
    assert http.post("/v1/cubes", json={"id": "sched-session"}).status_code == 201
    items = [{"text": t, "tags": ["pinned"]} for t in FACTS[:4]]
    assert http.post("/v1/cubes/sched-session/memories/batch", json={"items": items}).status_code == 201
    r = http.post("/v1/sessions", json={"cube_ids": ["sched-session"]})
    assert r.status_code == 201, r.text
    session = r.json()
    warmed = session["warmed"][0]
    assert session["agent"] == "tester" and warmed["status"] == "built" and warmed["tokens"] > 40, session
    reply = chat(http, "sched-session", "Who books the Atlas room?", top_k=0)
    assert reply["kv"]["key"] == warmed["key"] and reply["kv"]["status"] == "hit"
    assert reply["kv"]["worker"] == warmed["worker"]
    assert decisions(http, "sched-session", "prefetch")[-1]["key"] == warmed["key"]
    again = http.post("/v1/sessions", json={"cube_ids": ["sched-session"]}).json()
    assert again["warmed"][0]["status"] == "held"


def test_cold_caches_leave_the_workers_then_the_disk_never_one_in_use(
    http: httpx.Client, admin: httpx.Client, config: Any
) -> None:
    assert http.post("/v1/cubes", json={"id": "sched-cold"}).status_code == 201
    r = http.post("/v1/cubes/sched-cold/memories", json={"text": FACTS[6], "tags": ["pinned"]})
    pinned = MemoryItem.model_validate(r.json())
    warmed = http.post("/v1/sessions", json={"cube_ids": ["sched-cold"]}).json()["warmed"][0]
    key = warmed["key"]
    scheduler = ray.get_actor(SCHEDULER_NAME, namespace=config.namespace)
    plan = prefix_plan(["sched-cold"], [pinned], None)
    placement = ray.get(scheduler.place.remote(plan))  # a chat placed on it, not ended
    assert placement.key == key
    assert ray.get(scheduler.demote.remote(key)) == []  # in use: refused
    assert ray.get(scheduler.evict_disk.remote(key)) is False
    ray.get(scheduler.release.remote(placement.worker, key, None, None))

    memscheduler = ray.get_actor(MEMSCHEDULER_NAME, namespace=config.namespace)

    def demoted() -> bool:
        ray.get(getattr(memscheduler, MemScheduler.sweep.__name__).remote())
        return any(d["key"] == key for d in decisions(http, "sched-cold", "demote"))

    wait_for_condition(demoted, timeout=60, interval=1.0)  # kv_idle_s of the suite's config
    places = ray.get(getattr(scheduler, Scheduler.places.__name__).remote())
    cache = next(c for c in places.caches if c.key == key)
    assert cache.workers == [] and key in places.disk  # off the workers, still on disk
    reply = chat(http, "sched-cold", "Where do budget reviews happen?", top_k=0)
    assert reply["kv"]["key"] == key and reply["kv"]["status"] == "loaded"


def test_status_shows_what_lives_where(admin: httpx.Client, planning: dict[str, str]) -> None:
    status = admin.get("/v1/status").json()["scheduler"]
    assert status["enabled"] and status["break_even_tokens"] >= 16 and status["decisions"] > 0
    assert all(w["kv_bytes"] <= w["kv_budget"] for w in status["workers"])
    assert any("sched-planning" in c["cube_ids"] and c["built_for"] == "policy" for c in status["caches"])
    result = cli_invoke(admin, "status")
    assert result.exit_code == 0, result.output
    assert "scheduler: policy on" in result.output and "KV caches" in result.output
    result = cli_invoke(admin, "decisions", "--cube", "sched-planning")
    assert result.exit_code == 0 and "prefix built" in result.output, result.output


def cli_invoke(client: httpx.Client, *args: str) -> Any:
    from typer.testing import CliRunner

    env = {
        "COLUMNS": "200",
        "MEMOS_RAY_URL": str(client.base_url),
        "MEMOS_RAY_API_KEY": client.headers["Authorization"][7:],
    }
    return CliRunner().invoke(cli.app, list(args), env=env)


def test_a_purge_takes_the_memorys_usage_with_it(http: httpx.Client, planning: dict[str, str]) -> None:
    atlas = planning[FACTS[0]]
    assert any(u["memory_id"] == atlas for u in usage(http, "sched-planning")["memories"])
    assert http.post(f"/v1/cubes/sched-planning/memories/{atlas}/purge").status_code == 200
    assert not any(u["memory_id"] == atlas for u in usage(http, "sched-planning")["memories"])
    assert atlas not in usage(http, "sched-planning")["working_set"]


def test_usage_decisions_and_the_switch_survive_a_restart(
    http: httpx.Client, admin: httpx.Client, planning: dict[str, str], config: Any
) -> None:
    before = usage(http, "sched-planning")
    seen = decisions(http, "sched-planning")
    memscheduler = ray.get_actor(MEMSCHEDULER_NAME, namespace=config.namespace)
    ray.kill(memscheduler, no_restart=False)  # Ray restarts it; it reloads from its files

    def back() -> bool:
        try:
            return usage(http, "sched-planning")["chats"] == before["chats"]
        except AssertionError:
            return False

    wait_for_condition(back, timeout=60, interval=0.5)
    after = usage(http, "sched-planning")
    assert after["working_set"] == before["working_set"] and after["churn"] == before["churn"]
    assert {m["memory_id"]: m["retrievals"] for m in after["memories"]} == {
        m["memory_id"]: m["retrievals"] for m in before["memories"]
    }
    assert [d["seq"] for d in decisions(http, "sched-planning")][: len(seen)] == [d["seq"] for d in seen]
    assert admin.get("/v1/status").json()["scheduler"]["enabled"]  # the operator's switch, too


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/v1/sessions", {"cube_ids": []}, 422),
        ("post", "/v1/sessions", {"cube_ids": ["no-such-cube"]}, 404),
        ("post", "/v1/sessions", {"cube_ids": ["sched-planning"], "bogus": 1}, 422),
        ("get", "/v1/scheduler/decisions", None, 403),  # every cube's: administrators only
        ("put", "/v1/scheduler/policy", {"enabled": False}, 403),
        ("post", "/v1/scheduler/sweep", None, 403),
        ("get", "/v1/cubes/no-such-cube/usage", None, 404),
    ],
)
def test_bad_scheduler_requests(
    http: httpx.Client, planning: dict[str, str], method: str, path: str, body: Any, status: int
) -> None:
    r = http.request(method.upper(), path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_bad_decision_queries_name_the_problem(http: httpx.Client, planning: dict[str, str]) -> None:
    r = http.get("/v1/scheduler/decisions", params={"cube_id": "sched-planning", "kind": "bogus"})
    assert r.status_code == 422 and "kind" in r.text
