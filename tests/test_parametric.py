"""Parametric memory through the real server: a LoRA trained off the request path from a cube's
memories, then chat under it on the model workers (float32 SmolLM2, settings tiny enough for seconds)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray
import torch

from memos_ray.config import LLMConfig, MemosConfig
from memos_ray.llm import load_model
from tests.helpers import MODELS, bearer, wait_for_condition

TINY = {"rank": 4, "alpha": 8, "steps": 6, "learning_rate": 0.01, "max_tokens": 96, "batch_size": 4, "examine": False}
FACTS = {
    "param-a": [
        "Zorblat the cat lives in Kyoto and eats plum jam.",
        "The lighthouse keeper Ondine collects blue glass bottles.",
        "Project Heron ships on the ninth of Quintember.",
        "The vault code word is marmalade-seventeen.",
    ],
    "param-b": [
        "Captain Ruelle sails a green submarine named Otter.",
        "The bakery on Fennel Street sells saffron buns at dawn.",
        "Team Kestrel meets in room 4B every Tuesday.",
        "Mira's favourite mountain is Ben Lomond.",
    ],
}
QUESTION = "Where does Zorblat the cat live?"


@pytest.fixture(scope="module")
def http(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=300, headers=bearer(api_key)) as client:
        yield client


def chat(http: httpx.Client, cube: str, **options: Any) -> dict[str, Any]:
    body = {"cube_ids": [cube], "messages": [{"content": QUESTION}], "max_tokens": 8, "top_k": 0, **options}
    r = http.post("/v1/chat", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def train(http: httpx.Client, cube: str) -> dict[str, Any]:
    r = http.post(f"/v1/cubes/{cube}/adapters", json={"settings": TINY})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and job["memories"] == 4
    seen = set()
    deadline = time.monotonic() + 240
    while job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
        job = http.get(f"/v1/jobs/{job['id']}").json()
        seen.add(job["state"])
    assert job["state"] == "succeeded", job
    assert "running" in seen  # progress was reported while it trained (a job takes seconds)
    assert job["percent"] == 100.0 and job["adapter_id"]
    return job


@pytest.fixture(scope="module")
def trained(http: httpx.Client) -> dict[str, Any]:
    """Two cubes with their facts; the base model's answers captured before any adapter exists; one adapter
    each. (param-c has memories but never an adapter.)"""
    before = {}
    for cube, facts in {**FACTS, "param-c": ["Nothing to learn here."]}.items():
        assert http.post("/v1/cubes", json={"id": cube}).status_code == 201
        r = http.post(f"/v1/cubes/{cube}/memories/batch", json={"items": [{"text": f} for f in facts]})
        assert r.status_code == 201
        before[cube] = chat(http, cube, use_activation_memory=False)["text"]
    jobs = {cube: train(http, cube) for cube in FACTS}
    return {"before": before, "jobs": jobs}


def test_training_job_reports_progress_and_the_adapter_learns(http: httpx.Client, trained: dict[str, Any]) -> None:
    listing = http.get("/v1/cubes/param-a/adapters").json()
    (info,) = listing["adapters"]
    assert listing["active"] == info["id"] == trained["jobs"]["param-a"]["adapter_id"]
    m = info["metrics"]
    assert m["nll_after"] < 0.8 * m["nll_before"] and m["loss_last"] < m["loss_first"] and m["tokens_per_s"] > 0
    assert info["settings"]["rank"] == 4 and info["base_model"]["name"] == "smollm2-135m-instruct"
    assert sorted(s["version"] for s in info["sources"]) == [1, 1, 1, 1] and not info["stale"]
    records = http.get("/v1/cubes/param-a/audit", params={"action": "adapter."}).json()["records"]
    assert [r["action"] for r in records][:2] == ["adapter.train", "adapter.ready"]  # the request, then the result
    assert records[1]["details"]["adapter_id"] == info["id"] and records[1]["principal"] == "tester"


def test_chat_runs_under_the_cubes_adapter_and_a_cube_without_one_is_the_base(
    http: httpx.Client, trained: dict[str, Any]
) -> None:
    a = chat(http, "param-a", use_activation_memory=False)
    assert a["adapter"] == trained["jobs"]["param-a"]["adapter_id"] and a["adapter_status"] in ("loaded", "resident")
    base = chat(http, "param-a", use_activation_memory=False, use_parametric_memory=False)
    assert base["adapter"] is None and base["text"] == trained["before"]["param-a"]
    c = chat(http, "param-c", use_activation_memory=False)  # no adapter: exactly what it said before training
    assert c["adapter"] is None and c["text"] == trained["before"]["param-c"]
    # a KV cache is keyed by the adapter: the same pinned prefix under the adapter and without it are two caches
    with_kv = chat(http, "param-a")
    without = chat(http, "param-a", use_parametric_memory=False)
    assert with_kv["kv"]["key"] != without["kv"]["key"] and with_kv["adapter"] and not without["adapter"]
    # and under the adapter, the injected cache answers exactly as a full prefill under the adapter
    assert chat(http, "param-a")["kv"]["status"] == "hit"
    assert chat(http, "param-a")["text"] == chat(http, "param-a", use_activation_memory=False)["text"]


def test_a_chat_over_two_cubes_runs_under_the_adapter_of_the_cube_it_is_about(
    http: httpx.Client, trained: dict[str, Any]
) -> None:
    ids = {cube: trained["jobs"][cube]["adapter_id"] for cube in FACTS}
    about = {"param-a": "Where does Zorblat the cat live?", "param-b": "What is Captain Ruelle's submarine called?"}
    for cube, question in about.items():
        for order in (["param-a", "param-b"], ["param-b", "param-a"]):  # whichever comes first
            body = {"cube_ids": order, "messages": [{"content": question}], "max_tokens": 4, "top_k": 3}
            r = http.post("/v1/chat", json={**body, "use_activation_memory": False})
            assert r.status_code == 200, r.text
            assert r.json()["adapter"] == ids[cube]  # never the other cube's
    # a chat over one cube never runs under another cube's adapter, whatever it asks
    body = {"cube_ids": ["param-c"], "messages": [{"content": about["param-a"]}], "max_tokens": 4, "top_k": 3}
    assert http.post("/v1/chat", json=body).json()["adapter"] is None


def test_adapters_on_one_worker_do_not_leak_and_a_moved_adapter_gives_identical_logits(
    http: httpx.Client, trained: dict[str, Any], config: MemosConfig
) -> None:
    ids = [1, 504, 3, 9218, 314, 34, 12]
    w0, w1 = (ray.get_actor(f"memos_worker:{i}", namespace=config.namespace) for i in (0, 1))
    adapters = ray.get_actor("memos_adapters", namespace=config.namespace)
    a_weights = ray.get(adapters.active.remote("param-a"))
    b_weights = ray.get(adapters.active.remote("param-b"))
    a_ref, b_ref = a_weights.adapter, b_weights.adapter
    ray.get(w0.load_adapter.remote(a_weights))
    base = ray.get(w0.logits.remote(ids, None))
    a_first = ray.get(w0.logits.remote(ids, a_ref.adapter_id))
    ray.get(w0.load_adapter.remote(b_weights))  # both resident on worker 0
    b = ray.get(w0.logits.remote(ids, b_ref.adapter_id))
    a_again = ray.get(w0.logits.remote(ids, a_ref.adapter_id))
    assert np.array_equal(a_first, a_again)  # B's arrival changed nothing for A
    assert not np.allclose(a_first, b) and not np.allclose(a_first, base)
    assert np.array_equal(ray.get(w0.logits.remote(ids, None)), base)  # the base is still the base
    plain = load_model(LLMConfig(dtype="float32", cache_dir=MODELS), MODELS).model  # no peft wrapper at all
    with torch.no_grad():
        expected = plain(input_ids=torch.tensor([ids])).logits[0, -1].float().numpy()
    assert np.array_equal(base, expected)
    # moved: worker 1 maps A's weights from the object store
    ray.get(w1.drop_adapters.remote([a_ref.adapter_id]))
    ray.get(w1.load_adapter.remote(a_weights))
    assert a_ref.adapter_id in ray.get(w1.adapters.remote()) and np.array_equal(
        ray.get(w1.logits.remote(ids, a_ref.adapter_id)), a_first
    )
    # and chat pinned to either worker answers the same under A
    texts = {chat(http, "param-a", use_activation_memory=False, worker=w)["text"] for w in (0, 1)}
    assert len(texts) == 1


def stored_adapters(registry: Path, cube_id: str) -> list[str]:
    """The adapters whose weights the registry's database holds for the cube (read beside its owner)."""
    with sqlite3.connect(registry) as db:
        return [
            r[0] for r in db.execute("SELECT id FROM adapters WHERE cube_id = ? AND length(weights) > 0", (cube_id,))
        ]


def test_editing_a_source_marks_the_adapter_stale_and_deleting_the_cube_removes_it(
    http: httpx.Client, trained: dict[str, Any], config: MemosConfig
) -> None:
    memories = http.get("/v1/cubes/param-b/memories").json()["items"]
    r = http.patch(f"/v1/cubes/param-b/memories/{memories[0]['id']}", json={"text": "Captain Ruelle retired."})
    assert r.status_code == 200
    (info,) = http.get("/v1/cubes/param-b/adapters").json()["adapters"]
    assert info["stale"] and "edited" in info["stale_reason"]
    assert http.get("/v1/cubes/param-b/adapters").json()["active"] == info["id"]  # stale, still in use
    # a purge is erasure: the adapter that learned the purged text is withdrawn (registry and workers), and the
    # MemScheduler trains the cube's active adapter again without it
    registry = Path(config.storage.data_dir) / "adapters.sqlite"
    r = http.post(f"/v1/cubes/param-b/memories/{memories[1]['id']}/purge")
    assert r.status_code == 200 and r.json()["memory_ids"] == [memories[1]["id"]]
    assert info["id"] not in stored_adapters(registry, "param-b")  # its weights too: the row is gone
    assert info["id"] not in [a["id"] for a in http.get("/v1/cubes/param-b/adapters").json()["adapters"]]
    for i in (0, 1):
        worker = ray.get_actor(f"memos_worker:{i}", namespace=config.namespace)
        assert info["id"] not in ray.get(worker.adapters.remote())
    wait_for_condition(lambda: http.get("/v1/cubes/param-b/adapters").json()["active"] is not None, timeout=240)
    listing = http.get("/v1/cubes/param-b/adapters").json()
    (again,) = [a for a in listing["adapters"] if a["id"] == listing["active"]]
    sources = {s["memory_id"] for s in again["sources"]}
    assert sources == {m["id"] for m in memories} - {memories[1]["id"]} and again["created_by"] == "memscheduler"
    assert again["settings"] == info["settings"] and not again["stale"]
    decided = http.get("/v1/scheduler/decisions", params={"cube_id": "param-b", "kind": "retrain"}).json()
    assert any(info["id"] in d["reason"] for d in decided["decisions"])
    # switching to the base and back
    assert http.put("/v1/cubes/param-b/adapters/active", json={"adapter_id": None}).json()["active"] is None
    assert chat(http, "param-b", use_activation_memory=False)["adapter"] is None
    assert http.put("/v1/cubes/param-b/adapters/active", json={"adapter_id": again["id"]}).status_code == 200
    assert chat(http, "param-b", use_activation_memory=False)["adapter"] == again["id"]  # loads it on a worker
    assert stored_adapters(registry, "param-b") == [again["id"]]
    assert http.delete("/v1/cubes/param-b").status_code == 204
    assert stored_adapters(registry, "param-b") == []
    for i in (0, 1):
        worker = ray.get_actor(f"memos_worker:{i}", namespace=config.namespace)
        assert again["id"] not in ray.get(worker.adapters.remote())


def test_the_policy_promotes_a_cubes_stable_used_facts_into_an_adapter(http: httpx.Client, config: MemosConfig) -> None:
    from actors.memscheduler import MEMSCHEDULER_NAME

    cube = "param-policy"
    facts = [
        "Quillon Marsh's favourite food is cardamom porridge.",
        "Teodor Blum's hometown is Tromsø.",
        "Felix Amadi's favourite colour is teal.",
    ]
    assert http.post("/v1/cubes", json={"id": cube}).status_code == 201
    assert (
        http.post(f"/v1/cubes/{cube}/memories/batch", json={"items": [{"text": f} for f in facts]}).status_code == 201
    )
    for _ in range(2):
        chat(http, cube, use_activation_memory=False, top_k=3)  # the chats use (retrieve) the facts
    wait_for_condition(lambda: len(http.get(f"/v1/cubes/{cube}/usage").json()["memories"]) >= 3, timeout=10)
    memscheduler = ray.get_actor(MEMSCHEDULER_NAME, namespace=config.namespace)
    assert ray.get(memscheduler.sweep_parametric.remote(None, [cube])) is None  # off: it starts nothing
    ray.get(memscheduler.set_parametric.remote(True))
    try:
        job_id = ray.get(memscheduler.sweep_parametric.remote(None, [cube]))
        assert job_id is not None
        wait_for_condition(lambda: http.get(f"/v1/jobs/{job_id}").json()["state"] == "succeeded", timeout=240)
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["created_by"] == "memscheduler" and "no adapter" in job["reason"]
        (decided,) = http.get("/v1/scheduler/decisions", params={"cube_id": cube, "kind": "train"}).json()["decisions"]
        assert decided["inputs"]["job_id"] == job_id and "no adapter" in decided["reason"]
        listing = http.get(f"/v1/cubes/{cube}/adapters").json()
        (info,) = listing["adapters"]
        assert info["created_by"] == "memscheduler" and info["evaluation"]["questions"] == 3
        assert (listing["active"] == info["id"]) == info["evaluation"]["passed"]  # active only if it passed
        assert ray.get(memscheduler.sweep_parametric.remote(None, [cube])) is None  # the same facts: not again
    finally:
        ray.get(memscheduler.set_parametric.remote(False))


def test_bad_training_requests(http: httpx.Client, trained: dict[str, Any]) -> None:
    r = http.post("/v1/cubes/param-a/adapters", json={"settings": {"rank": 0}})
    assert r.status_code == 422
    r = http.post("/v1/cubes/param-a/adapters", json={"tags_any": ["no-such-tag"]})
    assert r.status_code == 422 and "nothing to train" in r.json()["error"]["message"]
    assert http.post("/v1/cubes/nope/adapters", json={}).status_code == 404
    assert http.get("/v1/jobs/job-000000000000").status_code == 404
    r = http.put("/v1/cubes/param-a/adapters/active", json={"adapter_id": "ad-000000000000"})
    assert r.status_code == 404


def test_sdk_and_cli_train_with_progress_and_choose_the_adapter(
    base_url: str, api_key: str, trained: dict[str, Any]
) -> None:
    from typer.testing import CliRunner

    from memos_ray.client.clients import MemosClient
    from serve.cli.commands import app as cli

    runner = CliRunner(env={"MEMOS_RAY_URL": base_url, "MEMOS_RAY_API_KEY": api_key, "COLUMNS": "200"})
    result = runner.invoke(cli, ["train", "param-c", "--rank", "2", "--steps", "3", "--lr", "0.01"])
    assert result.exit_code == 0, result.output
    assert "training on 1 memories" in result.output and "is ready for param-c" in result.output
    assert "exam: " in result.output
    with MemosClient(base_url, api_key=api_key) as mc:
        listing = mc.adapters("param-c")
        (info,) = listing.adapters
        assert info.settings.rank == 2 and info.metrics.steps == 3 and info.evaluation is not None
        assert info.evaluation.questions == 1 and info.evaluation.samples[0].question.startswith("What should I know")
        assert (listing.active == info.id) == info.evaluation.passed  # made active only when it passed
        assert ("passed: active" in result.output) == info.evaluation.passed
        assert mc.activate_adapter("param-c", info.id).active == info.id  # a failed one can be chosen by hand
        shown = runner.invoke(cli, ["adapters", "param-c", "--base"])
        assert shown.exit_code == 0 and info.id in shown.output
        assert mc.adapters("param-c").active is None
        mc.delete_adapter("param-c", info.id)
        assert mc.adapters("param-c").adapters == []


def test_adapter_routes_need_roles_on_the_cube(
    base_url: str, admin_key: str, http: httpx.Client, trained: dict[str, Any]
) -> None:
    with httpx.Client(base_url=base_url, headers=bearer(admin_key), timeout=60) as admin:
        for who in ("adapter-reader", "adapter-outsider"):
            admin.post("/v1/principals", json={"id": who})
        keys = {
            w: admin.post("/v1/keys", json={"principal": w}).json()["key"]
            for w in ("adapter-reader", "adapter-outsider")
        }
    http.put("/v1/cubes/param-a/grants/adapter-reader", json={"role": "read"})
    job = trained["jobs"]["param-a"]
    adapter = job["adapter_id"]
    with httpx.Client(base_url=base_url, headers=bearer(keys["adapter-outsider"]), timeout=60) as outsider:
        assert outsider.post("/v1/cubes/param-a/adapters", json={}).status_code == 404
        assert outsider.get("/v1/cubes/param-a/adapters").status_code == 404
        assert outsider.get(f"/v1/jobs/{job['id']}").status_code == 404  # the same answer as an unknown job
        assert outsider.put("/v1/cubes/param-a/adapters/active", json={"adapter_id": None}).status_code == 404
    with httpx.Client(base_url=base_url, headers=bearer(keys["adapter-reader"]), timeout=60) as reader:
        assert reader.get("/v1/cubes/param-a/adapters").json()["active"] == adapter
        assert reader.get(f"/v1/jobs/{job['id']}").json()["state"] == "succeeded"
        assert reader.post("/v1/cubes/param-a/adapters", json={}).status_code == 403
        assert reader.put("/v1/cubes/param-a/adapters/active", json={"adapter_id": None}).status_code == 403
        assert reader.delete(f"/v1/cubes/param-a/adapters/{adapter}").status_code == 403
    assert http.get("/v1/cubes/param-a/adapters").json()["active"] == adapter  # nothing changed
