"""Idempotency keys: the store's rules on both databases, a cube that knows a retried add, and the HTTP
routes that answer a retry with the first answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from memos_ray.governance.idempotency import IdempotencyStore
from tests.helpers import bearer, wait_for_condition


def test_a_key_runs_once_replays_its_answer_and_names_one_request(tmp_path: Path, database_uri: str | None) -> None:
    store = IdempotencyStore(tmp_path / "idempotency.sqlite", database_uri, ttl_s=100, lease_s=10)
    first = store.claim("s", "k1", "req-a", now=1000)
    assert first.outcome == "run" and first.first_at == 1000
    assert store.claim("s", "k1", "req-a", now=1001).outcome == "in_flight"  # the first is still running
    assert store.claim("s", "k1", "req-b", now=1001).outcome == "mismatch"  # another request under its key
    assert store.claim("other-scope", "k1", "req-b", now=1001).outcome == "run"  # keys are per credential
    store.finish("s", "k1", 201, "application/json", b'{"id": "m1"}')
    again = store.claim("s", "k1", "req-a", now=1002)
    assert (again.outcome, again.status, again.media_type, again.body) == (
        "replay",
        201,
        "application/json",
        b'{"id": "m1"}',
    )

    # a request that got a 5xx is released: its retry runs again as the same request (the same first time)
    assert store.claim("s", "k2", "req-c", now=1000).outcome == "run"
    store.release("s", "k2")
    retry = store.claim("s", "k2", "req-c", now=1003)
    assert retry.outcome == "run" and retry.first_at == 1000
    # a reservation whose process died expires after the lease, and is taken over the same way
    assert store.claim("s", "k2", "req-c", now=1005).outcome == "in_flight"
    taken = store.claim("s", "k2", "req-c", now=1014)
    assert taken.outcome == "run" and taken.first_at == 1000
    # a reservation whose holder is known dead is taken over at once: that one, once (a newer one is not)
    assert store.claim("s", "k3", "req-d", now=1000).outcome == "run"
    held = store.claim("s", "k3", "req-d", now=1001)
    assert held.outcome == "in_flight" and held.started == 1000
    assert store.claim("s", "k3", "req-d", now=1002, dead=999).outcome == "in_flight"
    assert store.claim("s", "k3", "req-d", now=1002, dead=held.started).outcome == "run"
    assert store.claim("s", "k3", "req-d", now=1003, dead=held.started).outcome == "in_flight"
    store.close()
    reopened = IdempotencyStore(tmp_path / "idempotency.sqlite", database_uri, ttl_s=100, lease_s=10)
    assert reopened.claim("s", "k1", "req-a", now=1050).outcome == "replay"  # durable
    assert reopened.claim("s", "k1", "req-b", now=1200).outcome == "run"  # after the ttl a key is new again
    reopened.close()


@pytest.fixture(scope="module")
def http(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60, headers=bearer(api_key)) as client:
        r = client.post("/v1/cubes", json={"id": "idem", "name": "idempotency"})
        assert r.status_code == 201, r.text
        yield client


def test_a_retried_write_gets_the_first_answer_and_writes_nothing_again(http: httpx.Client) -> None:
    key = {"Idempotency-Key": "add-0001"}
    first = http.post("/v1/cubes/idem/memories", json={"text": "Rosa waters the orchids on Fridays."}, headers=key)
    assert first.status_code == 201, first.text
    again = http.post("/v1/cubes/idem/memories", json={"text": "Rosa waters the orchids on Fridays."}, headers=key)
    assert again.status_code == 201 and again.content == first.content
    assert again.headers["Idempotency-Replayed"] == "true" and "Idempotency-Replayed" not in first.headers
    assert http.get("/v1/cubes/idem").json()["memory_count"] == 1

    batch = {"items": [{"text": "Tea at four."}, {"text": "Chess on Sundays."}]}
    b1 = http.post("/v1/cubes/idem/memories/batch", json=batch, headers={"Idempotency-Key": "batch-1"})
    b2 = http.post("/v1/cubes/idem/memories/batch", json=batch, headers={"Idempotency-Key": "batch-1"})
    assert b1.status_code == b2.status_code == 201 and b1.json() == b2.json()
    assert http.get("/v1/cubes/idem").json()["memory_count"] == 3
    # a memory's id is made from the key: time-ordered like any other (the same millisecond prefix), in the
    # request's order
    ids = [item["memory_id"] for item in b1.json()["items"]]
    assert all(i.startswith("m") and len(i) == 27 for i in ids) and ids == sorted(ids)
    assert abs(int(ids[0][1:13], 16) - int(first.json()["id"][1:13], 16)) < 60_000

    memory_id = first.json()["id"]
    patch = {"tags": ["garden"]}
    p1 = http.patch(f"/v1/cubes/idem/memories/{memory_id}", json=patch, headers={"Idempotency-Key": "edit-1"})
    p2 = http.patch(f"/v1/cubes/idem/memories/{memory_id}", json=patch, headers={"Idempotency-Key": "edit-1"})
    assert p1.json()["version"] == p2.json()["version"] == 2  # not a third version


def test_a_key_reused_for_another_request_or_malformed_is_a_4xx_that_writes_nothing(http: httpx.Client) -> None:
    key = {"Idempotency-Key": "reuse-1"}
    assert http.post("/v1/cubes/idem/memories", json={"text": "One thing."}, headers=key).status_code == 201
    before = http.get("/v1/cubes/idem").json()["memory_count"]
    other = http.post("/v1/cubes/idem/memories", json={"text": "Another thing."}, headers=key)
    assert other.status_code == 422 and "different request" in other.json()["error"]["message"]
    bad = http.post("/v1/cubes/idem/memories", json={"text": "x"}, headers={"Idempotency-Key": "no spaces allowed"})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]["message"]
    assert http.get("/v1/cubes/idem").json()["memory_count"] == before


def test_the_keys_actor_dying_under_a_keyed_request_does_not_fail_it(http: httpx.Client) -> None:
    """Its node lost, say: the request's answer still goes out, and a retry replays it (the restarted actor
    records the end), never a 500 and a key stuck as running."""
    import threading

    import ray

    http.post("/v1/cubes/idem/memories", json={"text": "The orchids need water on Fridays.", "tags": ["pinned"]})
    body = {"cube_ids": ["idem"], "messages": [{"role": "user", "content": "When do the orchids need water?"}]}
    key = {"Idempotency-Key": "chat-through-a-restart"}
    answer: dict[str, httpx.Response] = {}
    chat = threading.Thread(target=lambda: answer.update(r=http.post("/v1/chat", json=body, headers=key)))
    chat.start()
    time.sleep(0.5)  # the chat runs (a worker decodes for a while): its key is claimed
    ray.kill(ray.get_actor("memos_idempotency", namespace="memos_tests"), no_restart=False)
    chat.join(120)
    assert answer["r"].status_code == 200, answer["r"].text
    again = http.post("/v1/chat", json=body, headers=key)
    assert again.status_code == 200 and again.content == answer["r"].content
    assert again.headers.get("Idempotency-Replayed") == "true"


def test_a_reservation_whose_replica_died_is_taken_over_without_waiting_for_the_lease(http: httpx.Client) -> None:
    """The replica running a keyed request is lost with its node (Serve's proxy answers the client a 500): the
    retry runs at once, not after ``idempotency_lease_s`` of 409s."""
    import ray

    keys = ray.get_actor("memos_idempotency", namespace="memos_tests")

    @ray.remote(num_cpus=0)
    class Replica:
        def ready(self) -> bool:
            return True

    replica = Replica.options(name="test-replica", namespace="memos_tests").remote()  # type: ignore[attr-defined]
    ray.get(replica.ready.remote())
    holder = "test-replica"
    assert ray.get(keys.claim.remote("scope", "held", "req", holder)).outcome == "run"
    assert ray.get(keys.claim.remote("scope", "held", "req", None)).outcome == "in_flight"  # its holder runs it
    ray.kill(replica)
    wait_for_condition(lambda: ray.get(keys.claim.remote("scope", "held", "req", None)).outcome == "run", timeout=20)
    assert ray.get(keys.claim.remote("scope", "held", "req", None)).outcome == "in_flight"  # taken over once
