"""The memory lifecycle through the real server: a cube's policy set by PATCH, the MemScheduler's sweep
merging and archiving with every id still answering across passivation and restarts, supersession and "as
of" search, chats that become memory, and a purge after which the erased text is found in no store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from actors.directory import DIRECTORY_NAME
from actors.memscheduler import MEMSCHEDULER_NAME
from memos_ray.activation import kvcache
from memos_ray.config import MemosConfig
from memos_ray.types import UsageEvent
from tests.helpers import bearer, traces, wait_for_condition

DAY = 86_400.0
TINY = {"rank": 4, "alpha": 8, "steps": 4, "learning_rate": 0.01, "max_tokens": 96, "batch_size": 4, "examine": False}


@pytest.fixture(scope="module")
def http(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=300, headers=bearer(api_key)) as client:
        yield client


@pytest.fixture(scope="module")
def admin(base_url: str, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=300, headers=bearer(admin_key)) as client:
        yield client


def said(text: str, speaker: str, **more: Any) -> dict[str, Any]:
    return {"text": text, "kind": "dialogue", "source": {"speaker": speaker}, **more}


def add(http: httpx.Client, cube: str, items: list[dict[str, Any]]) -> list[str]:
    r = http.post(f"/v1/cubes/{cube}/memories/batch", json={"items": items})
    assert r.status_code == 201, r.text
    return [ref["memory_id"] for ref in r.json()["items"]]


def states(http: httpx.Client, cube: str, ids: list[str]) -> dict[str, str]:
    out = {}
    for memory_id in ids:
        r = http.get(f"/v1/cubes/{cube}/memories/{memory_id}")
        assert r.status_code == 200, r.text  # a background move never makes an id vanish
        out[memory_id] = r.json()["state"]
    return out


def search(http: httpx.Client, cube: str, query: str, **filters: Any) -> list[str]:
    r = http.post("/v1/search", json={"query": query, "cube_ids": [cube], "top_k": 10, "filter": filters})
    assert r.status_code == 200, r.text
    return [h["memory"]["id"] for h in r.json()["hits"]]


def test_merge_and_archive_keep_every_id_across_passivation_and_restarts(
    http: httpx.Client, admin: httpx.Client, config: MemosConfig
) -> None:
    cube = "life-ids"
    assert http.post("/v1/cubes", json={"id": cube}).status_code == 201
    bad = http.patch(f"/v1/cubes/{cube}", json={"lifecycle": {"merge_threshold": 2}})
    assert bad.status_code == 422 and "merge_threshold" in bad.text
    policy = {"merge_threshold": 0.93, "archive_after_s": 30 * DAY}
    r = http.patch(f"/v1/cubes/{cube}", json={"lifecycle": policy})
    assert r.status_code == 200 and r.json()["lifecycle"]["merge_threshold"] == 0.93
    first, dup, used, idle = add(
        http,
        cube,
        [
            said("We are flying to Lisbon on the third of May.", "Ravi"),
            said("We are flying to Lisbon on the 3rd of May.", "Ravi"),
            said("Ravi's brother plays the cello.", "Ravi"),
            said("The garden shed needs a new roof.", "Ravi"),
        ],
    )
    swept = admin.post("/v1/scheduler/sweep").json()["lifecycle"]
    mine = next(s for s in swept if s["cube_id"] == cube)
    assert mine["merged"] == {dup: first}
    merged = http.get(f"/v1/cubes/{cube}/memories/{dup}").json()
    assert merged["merged_into"] == first and merged["provenance"]["author"] == "memscheduler"
    assert [r["memory_id"] for r in http.get(f"/v1/cubes/{cube}/memories/{first}").json()["merged_from"]] == [dup]
    made = http.get("/v1/scheduler/decisions", params={"cube_id": cube, "kind": "merge"}).json()["decisions"]
    assert len(made) == 1 and dup in made[0]["reason"]
    assert dup not in search(http, cube, "flight to Lisbon in May")

    # forty days on, the memory an agent kept using stays; the others are archived (out of default search)
    memscheduler = ray.get_actor(MEMSCHEDULER_NAME, namespace=config.namespace)
    later = time.time() + 40 * DAY
    use = UsageEvent(cube_id=cube, agent="tester", at=datetime.fromtimestamp(later - DAY, UTC), retrieved=[used])
    ray.get(memscheduler.record.remote([use]))
    (result,) = [s for s in ray.get(memscheduler.sweep_lifecycle.remote(later)) if s.cube_id == cube]
    assert set(result.archived) == {first, idle}
    assert search(http, cube, "flight to Lisbon in May", states=["archived"])[0] == first
    expected = {first: "archived", dup: "merged", idle: "archived"}
    assert {m: s for m, s in states(http, cube, list(expected)).items()} == expected

    # every id answers the same after a passivation, a crash of the cube's actor, and a MemScheduler restart
    before = states(http, cube, [first, dup, used, idle])
    directory = ray.get_actor(DIRECTORY_NAME, namespace=config.namespace)
    assert ray.get(directory.passivate.remote(cube))
    assert states(http, cube, [first, dup, used, idle]) == before
    ray.kill(ray.get(directory.activate.remote(cube)).handle, no_restart=True)  # a crash: the next call replaces it
    wait_for_condition(lambda: _answers(http, cube, first), timeout=60)
    assert states(http, cube, [first, dup, used, idle]) == before
    ray.kill(memscheduler, no_restart=False)
    wait_for_condition(lambda: _sweeps(admin), timeout=60)
    again = next(s for s in admin.post("/v1/scheduler/sweep").json()["lifecycle"] if s["cube_id"] == cube)
    assert again["checked"] == 0 and not again["merged"]  # where it left off survived the restart

    # restoring is a PATCH; a merged memory leaves the one it was merged into
    r = http.patch(f"/v1/cubes/{cube}/memories/{dup}", json={"state": "active"})
    assert r.status_code == 200 and r.json()["state"] == "active" and r.json()["merged_into"] is None
    assert http.get(f"/v1/cubes/{cube}/memories/{first}").json()["merged_from"] == []


def _answers(http: httpx.Client, cube: str, memory_id: str) -> bool:
    try:
        return http.get(f"/v1/cubes/{cube}/memories/{memory_id}").status_code == 200
    except httpx.HTTPError:
        return False


def _sweeps(admin: httpx.Client) -> bool:
    return admin.post("/v1/scheduler/sweep").status_code == 200


def test_supersession_validity_and_as_of_search(http: httpx.Client) -> None:
    cube = "life-facts"
    assert http.post("/v1/cubes", json={"id": cube}).status_code == 201
    (old,) = add(http, cube, [{"text": "Dana works at the Boston office.", "valid_from": "2020-01-01T00:00:00Z"}])
    bad = http.post(f"/v1/cubes/{cube}/memories", json={"text": "Dana moved.", "supersedes": ["m-not-here"]})
    assert bad.status_code == 422 and "m-not-here" in bad.json()["error"]["message"]
    r = http.post(
        f"/v1/cubes/{cube}/memories",
        json={"text": "Dana works at the Denver office.", "valid_from": "2023-06-01T00:00:00Z", "supersedes": [old]},
    )
    assert r.status_code == 201, r.text
    new = r.json()["id"]
    closed = http.get(f"/v1/cubes/{cube}/memories/{old}").json()
    assert closed["state"] == "superseded" and closed["superseded_by"] == new
    assert closed["valid_to"].startswith("2023-06-01")
    assert search(http, cube, "which office does Dana work at?") == [new]
    assert search(http, cube, "which office does Dana work at?", as_of="2021-03-01T00:00:00Z") == [old]
    assert http.get(f"/v1/cubes/{cube}").json()["memory_count"] == 2  # the refused add stored nothing


def test_a_remembered_chat_becomes_memory_the_next_chat_retrieves(http: httpx.Client) -> None:
    cube = "life-loop"
    assert http.post("/v1/cubes", json={"id": cube}).status_code == 201
    (fact,) = add(http, cube, [{"text": "The spare key is under the blue flowerpot."}])
    body = {
        "cube_ids": [cube],
        "messages": [{"role": "user", "content": "Where is the spare key kept?", "speaker": "Ola"}],
        "max_tokens": 12,
        "remember": True,
    }
    r = http.post("/v1/chat", json=body)
    assert r.status_code == 200, r.text
    chat = r.json()
    asked, answered = (http.get(f"/v1/cubes/{cube}/memories/{m['memory_id']}").json() for m in chat["remembered"])
    assert asked["text"] == "Where is the spare key kept?" and asked["provenance"]["speaker"] == "Ola"
    assert answered["text"] == chat["text"].strip() and answered["provenance"]["role"] == "assistant"
    assert fact in [ref["memory_id"] for ref in answered["provenance"]["derived_from"]]
    assert answered["metadata"]["chat_id"] == chat["chat_id"] == answered["provenance"]["conversation_id"]
    assert answered["metadata"]["model"] == "smollm2-135m-instruct" and answered["kind"] == "dialogue"

    def audited() -> set[str]:
        records = http.get(f"/v1/cubes/{cube}/audit").json()["records"]
        return {a["memory_id"] for a in records if a["action"] == "memory.add"}

    wait_for_condition(lambda: audited() >= {asked["id"], answered["id"]}, timeout=10)

    two = http.post("/v1/chat", json={**body, "cube_ids": [cube, "life-facts"]})
    assert two.status_code == 422 and "one cube" in two.text  # a purge in one could not reach the other

    again = {**body, "messages": [{"role": "user", "content": "What did Ola ask about the spare key?"}]}
    again["remember"] = False
    used = {m["memory_id"] for m in http.post("/v1/chat", json=again).json()["memories_used"]}
    assert asked["id"] in used


def test_a_purge_leaves_the_text_in_no_store(http: httpx.Client, admin: httpx.Client, config: MemosConfig) -> None:
    cube = "life-forget"
    token = "zanzibar-quartz-9931"
    secret = f"Quillon's vault phrase is {token}."
    assert http.post("/v1/cubes", json={"id": cube}).status_code == 201
    (pinned,) = add(http, cube, [{"text": secret, "tags": ["pinned"]}])
    others = add(http, cube, [{"text": "Quillon grows tomatoes."}, {"text": "Quillon's dog is called Pip."}])
    r = http.post(
        f"/v1/cubes/{cube}/messages",
        json={"messages": [{"speaker": "Quinn", "content": secret}, {"speaker": "Ana", "content": "Noted, thanks."}]},
    )
    said_it, reply = (ref["memory_id"] for ref in r.json()["items"])
    # it is searched, cached as a KV prefix, remembered in a chat, and trained into the active adapter
    assert pinned in search(http, cube, "vault phrase")
    body = {"cube_ids": [cube], "messages": [{"content": "What is the vault phrase?"}], "max_tokens": 8}
    chat = http.post("/v1/chat", json={**body, "remember": True, "use_parametric_memory": False}).json()
    assert chat["kv"]["status"] == "built" and pinned in {m["memory_id"] for m in chat["memories_used"]}
    job = http.post(f"/v1/cubes/{cube}/adapters", json={"settings": TINY, "kinds": []}).json()
    wait_for_condition(lambda: _job(http, job["id"]) == "succeeded", timeout=240)
    trained = http.get(f"/v1/cubes/{cube}/adapters").json()["active"]
    data = Path(config.storage.data_dir)
    cached = _kv_built_from(data, pinned)
    assert cached and traces(data, token)

    r = http.post(f"/v1/cubes/{cube}/memories/{pinned}/purge")
    assert r.status_code == 200, r.text
    purged = r.json()
    answer = chat["remembered"][1]["memory_id"]
    assert answer in purged["memory_ids"]  # the remembered answer was made from it
    assert http.post(f"/v1/cubes/{cube}/memories/{said_it}/purge").status_code == 200
    assert http.get(f"/v1/cubes/{cube}/memories/{reply}").json()["context"] is None  # it quoted the text

    # the adapter that learned it is gone, and one trained without it takes its place
    wait_for_condition(lambda: _retrained(http, cube, trained), timeout=240)
    listing = http.get(f"/v1/cubes/{cube}/adapters").json()
    assert trained not in [a["id"] for a in listing["adapters"]]
    (now_active,) = [a for a in listing["adapters"] if a["id"] == listing["active"]]
    assert {s["memory_id"] for s in now_active["sources"]}.isdisjoint({pinned, said_it, answer})
    assert set(others) <= {s["memory_id"] for s in now_active["sources"]}

    # no KV cache built from it, on disk or in a worker's memory
    assert _kv_built_from(data, pinned) == []
    for i in range(config.workers.count):
        worker = ray.get_actor(f"memos_worker:{i}", namespace=config.namespace)
        assert not set(ray.get(worker.resident.remote())) & set(cached)
    # no usage, no change event, no audit record with the text; no file anywhere holds it, nor a log line
    assert not {m["memory_id"] for m in http.get(f"/v1/cubes/{cube}/usage").json()["memories"]} & {pinned, said_it}
    directory = ray.get_actor(DIRECTORY_NAME, namespace=config.namespace)
    live = ray.get(directory.activate.remote(cube))
    feed = ray.get(live.handle.wait_changes.remote(live.lease, 0, 0.0)).model_dump_json()
    assert token not in feed and pinned in feed  # that it was purged is kept, never what it said
    audit = http.get(f"/v1/cubes/{cube}/audit").text
    assert token not in audit and '"memory.purge"' in audit
    assert traces(data, token) == []
    assert traces(Path(_session_dir()) / "logs", token) == []


def _job(http: httpx.Client, job_id: str) -> str:
    state = http.get(f"/v1/jobs/{job_id}").json()["state"]
    assert state != "failed"
    return str(state)


def _retrained(http: httpx.Client, cube: str, withdrawn: str) -> bool:
    active = http.get(f"/v1/cubes/{cube}/adapters").json()["active"]
    return active is not None and active != withdrawn


def _kv_built_from(data: Path, memory_id: str) -> list[str]:
    """The keys of the KV cache files on disk whose sources include the memory."""
    found = []
    for path in (data / "kv").rglob("*.safetensors"):
        entry = kvcache.read_entry(path)
        if any(s.memory_id == memory_id for s in entry.sources):
            found.append(entry.key)
    return found


def _session_dir() -> str:
    from ray._private.worker import global_worker

    return str(global_worker.node.get_session_dir_path())
