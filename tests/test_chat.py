"""Activation memory through the real Serve app: two model workers (fp32), the Scheduler, /v1/chat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import ray

from memos_ray.activation.store import LocalKVStore
from memos_ray.config import MemosConfig
from tests.helpers import bearer, wait_for_condition

PINNED = [
    "The team's deploy window is Thursday afternoon.",
    "The staging database is called Heron.",
    "Dana owns the billing service.",
    "Code freeze starts on December 15.",
    "The on-call rotation changes every Monday.",
]


@pytest.fixture(scope="module")
def http(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120, headers=bearer(api_key)) as client:
        yield client


@pytest.fixture(scope="module")
def team(http: httpx.Client) -> dict[str, str]:
    assert http.post("/v1/cubes", json={"id": "chat-team"}).status_code == 201
    ids = {}
    for text in PINNED:
        r = http.post("/v1/cubes/chat-team/memories", json={"text": text, "tags": ["pinned"]})
        ids[text] = r.json()["id"]
    http.post("/v1/cubes/chat-team/memories", json={"text": "Eli prefers tea over coffee."})
    return ids


def chat(http: httpx.Client, question: str, key: str | None = None, **options: Any) -> dict[str, Any]:
    body = {"cube_ids": ["chat-team"], "messages": [{"role": "user", "content": question}], "max_tokens": 12}
    r = http.post("/v1/chat", json={**body, **options}, headers=bearer(key) if key else {})
    assert r.status_code == 200, r.text
    return r.json()


def test_cache_is_built_hit_moved_and_matches_a_full_prefill(http: httpx.Client, team: dict[str, str]) -> None:
    q = "What is the staging database called?"
    built = chat(http, q, worker=0)
    assert built["kv"]["status"] == "built" and built["kv"]["tokens"] > 50
    assert {m["memory_id"] for m in built["memories_used"]} >= set(team.values())
    hit = chat(http, q, worker=0)
    assert hit["kv"]["status"] == "hit" and hit["kv"]["key"] == built["kv"]["key"]
    moved = chat(http, q, worker=1)
    assert moved["kv"]["status"] == "moved" and moved["kv"]["moved_bytes"] > 0 and moved["kv"]["worker"] == 1
    off = chat(http, q, use_activation_memory=False)
    assert off["kv"]["status"] == "off"
    # greedy fp32: injected (here, or moved to another worker) == full prefill
    assert built["text"] == hit["text"] == moved["text"] == off["text"] and built["tokens_generated"] > 0
    assert hit["prefill_tokens"] + built["kv"]["tokens"] == off["prefill_tokens"] == off["prompt_tokens"]


def test_a_stale_cache_is_never_used_again(http: httpx.Client, team: dict[str, str], config: MemosConfig) -> None:
    q = "When is the deploy window?"
    before = chat(http, q, worker=0)
    mid = team["The team's deploy window is Thursday afternoon."]
    r = http.patch(f"/v1/cubes/chat-team/memories/{mid}", json={"text": "The team's deploy window is Friday morning."})
    assert r.status_code == 200
    after = chat(http, q, worker=0)
    assert after["kv"]["key"] != before["kv"]["key"] and after["kv"]["status"] == "built"
    sources = {(m["memory_id"], m["version"]) for m in after["memories_used"]}
    assert (mid, 2) in sources and (mid, 1) not in sources
    scheduler = ray.get_actor("memos_scheduler", namespace="memos_tests")
    assert ray.get(scheduler.stats.remote())["invalidated"] >= 1
    # the old cache is gone from every worker and from disk
    workers = [ray.get_actor(f"memos_worker:{i}", namespace="memos_tests") for i in range(2)]
    assert all(before["kv"]["key"] not in ray.get(w.resident.remote()) for w in workers)
    assert not LocalKVStore(config.storage.data_dir / "kv", 1).path(before["kv"]["key"]).exists()
    assert LocalKVStore(config.storage.data_dir / "kv", 1).path(after["kv"]["key"]).exists()


def test_an_edit_that_keeps_the_text_invalidates_and_rebuilds_cleanly(http: httpx.Client, team: dict[str, str]) -> None:
    q = "Who owns the billing service?"
    chat(http, q, worker=0)
    chat(http, q, worker=1)  # both workers hold it
    mid = team["Dana owns the billing service."]
    r = http.patch(f"/v1/cubes/chat-team/memories/{mid}", json={"tags": ["pinned", "billing"]})
    assert r.status_code == 200  # same text: same prefix, same key, but its cache was dropped
    again = [chat(http, q, worker=w) for w in (1, 0, 1)]
    assert [a["kv"]["status"] for a in again] == ["built", "moved", "hit"]
    assert len({a["text"] for a in again}) == 1


def test_a_prompt_longer_than_the_context_is_refused(http: httpx.Client, team: dict[str, str]) -> None:
    body = {"cube_ids": ["chat-team"], "messages": [{"content": "word " * 9000}], "top_k": 0}
    r = http.post("/v1/chat", json=body)
    assert r.status_code == 422 and "context" in r.json()["error"]["message"]


def test_persisted_cache_reloads_after_a_worker_restart(http: httpx.Client, team: dict[str, str]) -> None:
    q = "Who owns the billing service?"
    first = chat(http, q, worker=1)
    worker = ray.get_actor("memos_worker:1", namespace="memos_tests")
    ray.kill(worker, no_restart=False)

    def back() -> bool:
        try:
            return ray.get(worker.resident.remote(), timeout=5) == []
        except ray.exceptions.RayError:
            return False

    wait_for_condition(back, timeout=90)
    again = chat(http, q, worker=1)
    assert again["kv"]["status"] == "loaded" and again["kv"]["key"] == first["kv"]["key"]
    assert again["text"] == first["text"]


def test_a_swarm_shares_one_prefill(http: httpx.Client, team: dict[str, str]) -> None:
    http.post("/v1/cubes/chat-team/memories", json={"text": "The swarm meets at noon.", "tags": ["pinned"]})
    scheduler = ray.get_actor("memos_scheduler", namespace="memos_tests")
    builds = ray.get(scheduler.stats.remote())["builds"]
    questions = ["When does the swarm meet?", "Who owns billing?", "When is code freeze?", "Staging database?"]
    keys = []
    for i in range(4):  # four agents of the cube's owner, each with its own key
        r = http.post("/v1/principals", json={"id": f"swarm-agent-{i}", "kind": "agent", "parent": "tester"})
        assert r.status_code == 201, r.text
        keys.append(http.post("/v1/keys", json={"principal": f"swarm-agent-{i}"}).json()["key"])
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda iq: chat(http, iq[1], key=keys[iq[0]], max_tokens=4), enumerate(questions)))
    assert [a["agent"] for a in answers] == [f"swarm-agent-{i}" for i in range(4)]
    assert ray.get(scheduler.stats.remote())["builds"] == builds + 1
    assert len({a["kv"]["key"] for a in answers}) == 1
    assert sorted(a["kv"]["status"] for a in answers).count("built") == 1


def test_the_break_even_is_measured_once(http: httpx.Client, team: dict[str, str]) -> None:
    """Callers that ask together share one measurement (a second one burned a core through the first ingest)."""
    scheduler = ray.get_actor("memos_scheduler", namespace="memos_tests")
    assert len(set(ray.get([scheduler.calibrated.remote() for _ in range(4)]))) == 1
    workers = ray.get(scheduler.stats.remote())["workers"]
    assert sum(w["calibrations"] for w in workers) <= 1  # a restarted worker (test above) counts from 0


def test_streaming_over_sse(http: httpx.Client, team: dict[str, str]) -> None:
    body = {
        "cube_ids": ["chat-team"],
        "messages": [{"role": "user", "content": "What is the staging database called?"}],
        "max_tokens": 12,
        "stream": True,
    }
    events = []
    with http.stream("POST", "/v1/chat", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for block in r.read().decode().split("\n\n"):
            if block.strip():
                kind, data = block.split("\n", 1)
                events.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    assert events[-1][0] == "done" and all(kind == "token" for kind, _ in events[:-1])
    text = "".join(d["text"] for _, d in events[:-1])
    assert text == events[-1][1]["text"] and events[-1][1]["ttft_ms"] > 0
    assert text == chat(http, "What is the staging database called?")["text"]


def test_a_retrieval_result_can_be_the_cached_prefix(http: httpx.Client, team: dict[str, str]) -> None:
    q = "Does Eli prefer tea or coffee?"
    first = chat(http, q, prefix="retrieved", top_k=2)
    again = chat(http, q, prefix="retrieved", top_k=2)
    assert first["kv"]["key"] == again["kv"]["key"] and again["kv"]["status"] in ("hit", "moved")
    pinned_only = chat(http, q, top_k=2)
    assert pinned_only["kv"]["key"] != first["kv"]["key"]  # the prefix holds the retrieved memories too
    assert first["kv"]["tokens"] > pinned_only["kv"]["tokens"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"cube_ids": ["no-such-cube"], "messages": [{"content": "hi"}]}, 404),
        ({"cube_ids": ["chat-team"], "messages": []}, 422),
        ({"cube_ids": [], "messages": [{"content": "hi"}]}, 422),
        ({"cube_ids": ["chat-team"], "messages": [{"content": "hi"}], "worker": 7}, 422),
        ({"cube_ids": ["chat-team"], "messages": [{"content": "hi"}], "max_tokens": 0}, 422),
        ({"cube_ids": ["chat-team"], "messages": [{"content": "hi"}], "temperature": -1}, 422),
        ({"cube_ids": ["chat-team"], "messages": [{"role": "robot", "content": "hi"}]}, 422),
        ({"cube_ids": ["../x"], "messages": [{"content": "hi"}]}, 422),
        ({"cube_ids": ["chat-team"], "messages": [{"content": "hi"}], "prefix": "everything"}, 422),
    ],
)
def test_bad_chat_requests(http: httpx.Client, team: dict[str, str], body: dict[str, Any], status: int) -> None:
    r = http.post("/v1/chat", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_the_cli_chat_streams_the_answer_then_its_memories(
    base_url: str, api_key: str, http: httpx.Client, team: dict[str, str]
) -> None:
    from typer.testing import CliRunner

    from serve import cli

    q = "What is the staging database called?"
    env = {"COLUMNS": "200", "MEMOS_RAY_URL": base_url, "MEMOS_RAY_API_KEY": api_key}
    shown = CliRunner().invoke(cli.app, ["chat", "chat-team", q, "--max-tokens", "12"], env=env)
    assert shown.exit_code == 0, shown.output
    answer = chat(http, q)["text"]
    assert shown.output.startswith(answer.strip()[:20])  # the same greedy answer, streamed first
    assert "kv: " in shown.output and all(f"used {m} v" in shown.output for m in team.values())
    missing = CliRunner().invoke(cli.app, ["chat", "no-such-cube", q], env=env)
    assert missing.exit_code == 1 and "404 cube_not_found" in missing.output


def test_compose_reuses_each_memorys_block_and_never_a_stale_one(http: httpx.Client) -> None:
    assert http.post("/v1/cubes", json={"id": "compose-team"}).status_code == 201
    ids = [
        http.post("/v1/cubes/compose-team/memories", json={"text": t, "tags": ["pinned"]}).json()["id"] for t in PINNED
    ]
    q = "What is the staging database called?"

    def ask(question: str, **options: Any) -> dict[str, Any]:
        body = {"cube_ids": ["compose-team"], "messages": [{"role": "user", "content": question}], "max_tokens": 12}
        r = http.post("/v1/chat", json={**body, "kv_mode": "compose", "top_k": 0, "worker": 0, **options})
        assert r.status_code == 200, r.text
        return r.json()

    full = ask(q, use_activation_memory=False)  # the same composed prompt, prefilled whole
    whole = ask(q, recompute=1.0)
    assert whole["kv"]["status"] == "composed" and whole["kv"]["blocks_built"] == len(PINNED)
    assert whole["text"] == full["text"] and whole["kv"]["reused_tokens"] == 0 < whole["kv"]["recomputed_tokens"]
    assert full["kv"]["status"] == "off" and full["prompt_tokens"] == whole["prompt_tokens"]
    again = ask("Who owns the billing service?")  # the server's default share; every block reused
    kv = again["kv"]
    assert kv["blocks_built"] == 0 and kv["reused_tokens"] + kv["recomputed_tokens"] > 0
    assert again["prefill_tokens"] == again["prompt_tokens"] - kv["tokens"]  # only what follows the memories
    # an edited memory's block is never reused: the cascade drops the old one, the chat builds the new
    edited = ids[1]
    r = http.patch(f"/v1/cubes/compose-team/memories/{edited}", json={"text": "The staging database is Osprey."})
    assert r.status_code == 200, r.text
    worker = ray.get_actor("memos_worker:0", namespace="memos_tests")
    wait_for_condition(lambda: not any(f"{edited}@1|" in k for k in ray.get(worker.stats.remote())["block_keys"]))
    after = ask(q, recompute=1.0)
    assert after["kv"]["blocks_built"] == 1 and (edited, 2) in {
        (m["memory_id"], m["version"]) for m in after["memories_used"]
    }
    assert after["text"] == ask(q, use_activation_memory=False)["text"]


def test_a_cube_sets_the_kv_mode_of_the_chats_that_do_not_say(http: httpx.Client) -> None:
    assert http.post("/v1/cubes", json={"id": "compose-default"}).status_code == 201
    items = [{"text": text, "tags": ["pinned"]} for text in PINNED[:2]]
    assert http.post("/v1/cubes/compose-default/memories/batch", json={"items": items}).status_code == 201

    def status(**options: Any) -> str:
        body = {"cube_ids": ["compose-default"], "messages": [{"role": "user", "content": "Hi?"}], "max_tokens": 2}
        r = http.post("/v1/chat", json={**body, "top_k": 0, **options})
        assert r.status_code == 200, r.text
        return str(r.json()["kv"]["status"])

    r = http.patch("/v1/cubes/compose-default", json={"kv_mode": "compose"})
    assert r.status_code == 200 and r.json()["kv_mode"] == "compose", r.text
    assert status() == "composed"
    assert status(kv_mode="prefix") in ("built", "hit")  # the request's own wins
    bad = http.patch("/v1/cubes/compose-default", json={"kv_mode": "sometimes"})
    assert bad.status_code == 422 and "kv_mode" in bad.text
    assert http.get("/v1/cubes/compose-default").json()["kv_mode"] == "compose"  # nothing changed
    r = http.patch("/v1/cubes/compose-default", json={"kv_mode": "default"})  # back to the server's (prefix)
    assert r.status_code == 200 and r.json()["kv_mode"] is None
    assert status() in ("built", "hit")
