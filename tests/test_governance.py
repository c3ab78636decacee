"""Governance through the real server: keys, grants, the denial matrix, audit, provenance, the change
feed, redaction and quotas.

The cast: alice owns cube ``gov-a``; carol may read it, dave may write it, the team ``ops`` (with
member erin) may read it; ``alice-bot`` is alice's agent; bob and his agent ``bob-bot`` are another
tenant with a cube of their own.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import ray

from memos_ray import AsyncMemosClient, MemosClient
from memos_ray.errors import MemosError
from tests.helpers import bearer

Keys = dict[str, str]


@pytest.fixture(scope="module")
def admin(base_url: str, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=bearer(admin_key), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def keys(admin: httpx.Client) -> Keys:
    people = [
        {"id": "ops", "kind": "team"},
        {"id": "alice"},
        {"id": "bob"},
        {"id": "carol"},
        {"id": "dave"},
        {"id": "erin", "teams": ["ops"]},
        {"id": "alice-bot", "kind": "agent", "parent": "alice"},
        {"id": "bob-bot", "kind": "agent", "parent": "bob"},
    ]
    for p in people:
        assert admin.post("/v1/principals", json=p).status_code == 201
    out = {}
    for p in people[1:]:
        r = admin.post("/v1/keys", json={"principal": p["id"]})
        assert r.status_code == 201
        out[p["id"]] = r.json()["key"]
    return out


def as_(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=bearer(key), timeout=60)


@pytest.fixture(scope="module")
def cubes(base_url: str, keys: Keys) -> dict[str, str]:
    """gov-a (alice's, shared) with one memory; gov-b (bob's)."""
    with as_(base_url, keys["alice"]) as alice:
        assert alice.post("/v1/cubes", json={"id": "gov-a"}).json()["owner"] == "alice"
        memory = alice.post("/v1/cubes/gov-a/memories", json={"text": "The vault code rotates every Monday."}).json()
        for principal, role in (("carol", "read"), ("dave", "write"), ("ops", "read")):
            r = alice.put(f"/v1/cubes/gov-a/grants/{principal}", json={"role": role})
            assert r.status_code == 200, r.text
    with as_(base_url, keys["bob"]) as bob:
        assert bob.post("/v1/cubes", json={"id": "gov-b"}).status_code == 201
        bob.post("/v1/cubes/gov-b/memories", json={"text": "Bob's vault code is private."})
    return {"memory": memory["id"]}


def test_no_key_bad_key_and_health(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as anon:
        assert anon.get("/v1/health").status_code == 200
        for headers in ({}, {"Authorization": "Basic abc"}, bearer("mrk_000000000000_wrong"), {"X-API-Key": "nope"}):
            for path in ("/v1/cubes", "/v1/status", "/v1/whoami", "/v1/models"):
                r = anon.get(path, headers=headers)
                assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated", path
            r = anon.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        # the API's description opens in a browser (the links `memos-ray up` prints); its routes still need keys
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert anon.get(path).status_code == 200, path


def test_shared_access_works_for_every_granted_principal(base_url: str, keys: Keys, cubes: dict[str, str]) -> None:
    for who in ("carol", "erin", "dave", "alice-bot"):
        with as_(base_url, keys[who]) as c:
            assert c.get(f"/v1/cubes/gov-a/memories/{cubes['memory']}").status_code == 200, who
            hits = c.post("/v1/cubes/gov-a/search", json={"query": "vault code"}).json()["hits"]
            assert hits and hits[0]["memory"]["id"] == cubes["memory"]
    with as_(base_url, keys["dave"]) as dave:
        written = dave.post("/v1/cubes/gov-a/memories", json={"text": "Dave checked the vault."})
        assert written.status_code == 201 and written.json()["provenance"]["author"] == "dave"
    with as_(base_url, keys["alice-bot"]) as bot:
        assert bot.post("/v1/cubes/gov-a/memories", json={"text": "The bot logged in."}).status_code == 201
    # A search over "everything I may read" is resolved on the server: carol sees gov-a, never gov-b.
    with as_(base_url, keys["carol"]) as carol:
        res = carol.post("/v1/search", json={"query": "vault code", "top_k": 20}).json()
        assert res["cube_ids"] == ["gov-a"] and {h["memory"]["cube_id"] for h in res["hits"]} == {"gov-a"}
        assert [c["id"] for c in carol.get("/v1/cubes").json()["cubes"]] == ["gov-a"]


def _attempts(cubes: dict[str, str]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(who, method, path, request kwargs): every one of these must be refused."""
    m = cubes["memory"]
    a = "/v1/cubes/gov-a"
    reads = [
        ("GET", f"{a}", {}),
        ("GET", f"{a}/memories", {}),
        ("GET", f"{a}/memories/{m}", {}),
        ("GET", f"{a}/memories/{m}/history", {}),
        ("POST", f"{a}/search", {"json": {"query": "vault"}}),
        ("POST", "/v1/search", {"json": {"query": "vault", "cube_ids": ["gov-a"]}}),
        ("GET", f"{a}/changes", {}),
        ("POST", "/v1/chat", {"json": {"cube_ids": ["gov-a"], "messages": [{"content": "code?"}]}}),
    ]
    writes = [
        ("POST", f"{a}/memories", {"json": {"text": "planted"}}),
        ("POST", f"{a}/memories/batch", {"json": {"items": [{"text": "planted"}]}}),
        ("POST", f"{a}/messages", {"json": {"messages": [{"content": "planted"}]}}),
        ("PATCH", f"{a}/memories/{m}", {"json": {"text": "overwritten"}}),
        ("DELETE", f"{a}/memories/{m}", {}),
    ]
    admin = [
        ("PUT", f"{a}/grants/bob", {"json": {"role": "admin"}}),
        ("DELETE", f"{a}/grants/carol", {}),
        ("PATCH", a, {"json": {"quotas": {"max_memories": 1}}}),
        ("POST", f"{a}/memories/{m}/purge", {}),
        ("GET", f"{a}/audit", {}),
        ("DELETE", a, {}),
    ]
    out = []
    for who in ("bob", "bob-bot"):  # another tenant, and another tenant's agent: everything
        out += [(who, *x) for x in reads + writes + admin]
    out += [("carol", *x) for x in writes + admin]  # a reader writes or administers
    out += [("erin", *x) for x in writes[:2] + admin[:2]]  # a team member past the team's role
    out += [("dave", *x) for x in admin]  # a writer administers
    out += [("gina", *x) for x in reads]  # a grant that was revoked
    out += [("revoked-key", *x) for x in reads + writes]  # alice-bot's key, revoked: 401
    out += [(who, "GET", "/v1/audit", {}) for who in ("alice", "dave")]  # the global log is for administrators
    out += [
        ("bob", "POST", "/v1/keys", {"json": {"principal": "alice"}}),  # keys for someone else
        ("alice-bot", "POST", "/v1/principals", {"json": {"id": "x-agent", "kind": "agent", "parent": "alice"}}),
        ("carol", "POST", "/v1/principals", {"json": {"id": "newadmin", "admin": True}}),
        ("alice-bot", "POST", "/v1/keys", {"json": {"principal": "alice-bot"}}),  # agents mint no keys
    ]
    return out


def test_denial_matrix_every_attempt_refused_audited_and_harmless(
    base_url: str, admin: httpx.Client, keys: Keys, cubes: dict[str, str]
) -> None:
    assert admin.post("/v1/principals", json={"id": "gina"}).status_code == 201
    keys = {**keys, "gina": admin.post("/v1/keys", json={"principal": "gina"}).json()["key"]}
    with as_(base_url, keys["alice"]) as alice:
        alice.put("/v1/cubes/gov-a/grants/gina", json={"role": "read"})
        alice.delete("/v1/cubes/gov-a/grants/gina")
        revoked = alice.post("/v1/keys", json={"principal": "alice-bot"}).json()
        alice.delete(f"/v1/keys/{revoked['info']['key_id']}")
    keys["revoked-key"] = revoked["key"]
    before = admin.get("/v1/cubes/gov-a/memories", params={"limit": 1000}).json()
    attempts = _attempts(cubes)
    assert len(attempts) >= 50
    refused = []
    for who, method, path, kw in attempts:
        rid = f"deny-{uuid.uuid4().hex[:12]}"
        with as_(base_url, keys[who]) as c:
            r = c.request(method, path, headers={"X-Request-Id": rid}, **kw)
        expected = (401,) if who == "revoked-key" else (403, 404)
        assert r.status_code in expected, (who, method, path, r.status_code, r.text)
        assert r.headers["x-request-id"] == rid
        refused.append((rid, who, r.status_code))
    # every attempt is in the audit log, as denied, with who tried (a revoked key: which key)
    for rid, who, status in refused:
        records = admin.get("/v1/audit", params={"request_id": rid}).json()["records"]
        seen = [(x["principal"] or x["key_id"], x["result"], x["status"]) for x in records]
        tried = revoked["info"]["key_id"] if who == "revoked-key" else who
        assert seen == [(tried, "denied", status)], rid
    # and nothing changed
    after = admin.get("/v1/cubes/gov-a/memories", params={"limit": 1000}).json()
    assert after == before
    meta = admin.get("/v1/cubes/gov-a").json()
    assert {g["principal"]: g["role"] for g in meta["grants"]} == {"carol": "read", "dave": "write", "ops": "read"}
    # a cube's admins see the attempts on their cube
    with as_(base_url, keys["alice"]) as alice:
        denied = alice.get("/v1/cubes/gov-a/audit", params={"result": "denied", "limit": 1000}).json()["records"]
        assert {"bob", "bob-bot", "carol", "dave", "erin"} <= {r["principal"] for r in denied}


def test_reading_another_cubes_memory_id_under_ones_own_cube_is_a_404_and_audited(
    base_url: str, admin: httpx.Client, keys: Keys, cubes: dict[str, str]
) -> None:
    """Probing memory ids through a cube one may read finds nothing, and leaves a trail."""
    rid = f"probe-{uuid.uuid4().hex[:12]}"
    with as_(base_url, keys["bob"]) as bob:
        r = bob.get(f"/v1/cubes/gov-b/memories/{cubes['memory']}", headers={"X-Request-Id": rid})  # gov-a's memory
    assert r.status_code == 404 and r.json()["error"]["code"] == "memory_not_found"
    records = admin.get("/v1/audit", params={"request_id": rid}).json()["records"]
    assert [(x["principal"], x["result"], x["status"], x["cube_id"], x["memory_id"]) for x in records] == [
        ("bob", "denied", 404, "gov-b", cubes["memory"])
    ]


def test_revoked_grant_and_revoked_key_stop_at_once(base_url: str, keys: Keys, cubes: dict[str, str]) -> None:
    with as_(base_url, keys["alice"]) as alice:
        cube = alice.post("/v1/cubes", json={"id": "gov-revoke"}).json()["id"]
        alice.post(f"/v1/cubes/{cube}/memories", json={"text": "revocation test"})
        alice.put(f"/v1/cubes/{cube}/grants/carol", json={"role": "read"})
        bot_key = alice.post("/v1/keys", json={"principal": "alice-bot", "label": "short-lived"}).json()
        with as_(base_url, keys["carol"]) as carol:
            assert carol.get(f"/v1/cubes/{cube}/memories").status_code == 200
            assert alice.delete(f"/v1/cubes/{cube}/grants/carol").status_code == 200
            assert carol.get(f"/v1/cubes/{cube}/memories").status_code == 404  # the very next request
        with as_(base_url, bot_key["key"]) as bot:
            assert bot.get(f"/v1/cubes/{cube}").status_code == 200
            assert alice.delete(f"/v1/keys/{bot_key['info']['key_id']}").json()["revoked_at"]
            r = bot.get(f"/v1/cubes/{cube}")
            assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
        with as_(base_url, keys["bob"]) as bob:  # another user cannot revoke alice's keys, or see them
            assert bob.delete(f"/v1/keys/{bot_key['info']['key_id']}").status_code == 404
            assert {k["principal"] for k in bob.get("/v1/keys").json()} == {"bob", "bob-bot"}


def test_audit_records_mutations_with_principal_and_survives_a_restart(
    base_url: str, admin: httpx.Client, keys: Keys, cubes: dict[str, str]
) -> None:
    with as_(base_url, keys["alice"]) as alice:
        page = alice.get("/v1/cubes/gov-a/audit", params={"action": "memory.", "limit": 1000}).json()
    adds = [(r["principal"], r["action"], r["memory_id"] is not None) for r in page["records"] if r["result"] == "ok"]
    assert ("alice", "memory.add", True) in adds and ("dave", "memory.add", True) in adds
    assert ("alice-bot", "memory.add", True) in adds
    seq = admin.get("/v1/audit/verify").json()["records"]
    audit_actor = ray.get_actor("memos_audit", namespace="memos_tests")
    ray.kill(audit_actor, no_restart=False)  # Ray restarts it; it reopens its file
    deadline = time.monotonic() + 60
    while True:
        r = admin.get("/v1/audit/verify")
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.json()["ok"] and r.json()["records"] >= seq


def test_provenance_keeps_author_and_source_in_every_version(base_url: str, keys: Keys) -> None:
    with as_(base_url, keys["dave"]) as dave:
        r = dave.post("/v1/cubes/gov-a/messages", json={"messages": [{"content": "We ship Friday.", "id": "msg-7"}]})
        mid = r.json()["items"][0]["memory_id"]
    with as_(base_url, keys["alice-bot"]) as bot:
        v2 = bot.patch(f"/v1/cubes/gov-a/memories/{mid}", json={"text": "We ship Monday.", "expected_version": 1})
        assert v2.status_code == 200
    with as_(base_url, keys["carol"]) as carol:
        history = carol.get(f"/v1/cubes/gov-a/memories/{mid}/history").json()
    assert [(h["version"], h["provenance"]["author"]) for h in history] == [(1, "dave"), (2, "alice-bot")]
    assert {(h["provenance"]["source_type"], h["provenance"]["source_id"]) for h in history} == {("message", "msg-7")}


def test_eight_agents_write_concurrently_and_lose_nothing(base_url: str, keys: Keys) -> None:
    """8 agents x 200 concurrent writes to one shared cube; then 8 agents race on one memory's version."""
    with as_(base_url, keys["alice"]) as alice:
        alice.post("/v1/cubes", json={"id": "gov-swarm"})
        agent_keys = []
        for i in range(8):
            alice.post("/v1/principals", json={"id": f"writer-{i}", "kind": "agent", "parent": "alice"})
            agent_keys.append(alice.post("/v1/keys", json={"principal": f"writer-{i}"}).json()["key"])
        counter = alice.post("/v1/cubes/gov-swarm/memories", json={"text": "counter 0"}).json()["id"]

    async def writer(i: int) -> list[dict[str, Any]]:
        # 200 writes issued at once per agent, 16 in flight on its connections (128 across the swarm):
        # with all 1,600 in flight, Serve's proxy queues and backs off, and throughput drops from ~60/s to ~8/s.
        pool = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=16))
        async with AsyncMemosClient(base_url, api_key=agent_keys[i], timeout=300, transport=pool) as mc:
            made = await asyncio.gather(*(mc.add("gov-swarm", f"agent {i} note {n}") for n in range(200)))
            return [{"id": m.id, "seq": m.seq, "author": m.provenance.author, "n": n} for n, m in enumerate(made)]

    async def incrementer(i: int) -> int:
        done = 0
        async with AsyncMemosClient(base_url, api_key=agent_keys[i], timeout=300) as mc:
            while done < 2:
                cur = await mc.get("gov-swarm", counter)
                try:
                    await mc.update("gov-swarm", counter, text=f"counter {i}.{done}", expected_version=cur.version)
                    done += 1
                except MemosError as exc:
                    assert exc.status_code == 409 and exc.code == "version_conflict"
        return done

    async def main() -> tuple[list[list[dict[str, Any]]], list[int]]:
        written = await asyncio.gather(*(writer(i) for i in range(8)))
        increments = await asyncio.gather(*(incrementer(i) for i in range(8)))
        return written, increments

    written, increments = asyncio.run(main())
    with MemosClient(base_url, api_key=keys["alice"]) as mc:
        listed = mc.list("gov-swarm", limit=1000, offset=0).total
        assert listed == 1 + 8 * 200
        seqs = [w["seq"] for part in written for w in part]
        assert len(set(seqs)) == 1600  # one change number per write: none lost or merged
        for i, part in enumerate(written):
            assert {w["author"] for w in part} == {f"writer-{i}"}
        history = mc.history("gov-swarm", counter)
        assert [h.version for h in history] == list(range(1, 2 + sum(increments)))  # no gap, no repeat
        assert [h.seq for h in history] == sorted(h.seq for h in history)


def test_change_feed_delivers_other_agents_writes_in_order(base_url: str, keys: Keys, cubes: dict[str, str]) -> None:
    events: list[tuple[float, Any]] = []
    with as_(base_url, keys["carol"]) as carol:
        start = carol.get("/v1/cubes/gov-a").json()["seq"]

    def follow() -> None:
        with MemosClient(base_url, api_key=keys["carol"]) as mc:
            for event in mc.watch("gov-a", after_seq=start):
                events.append((time.monotonic(), event))
                if len(events) == 3:
                    return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(1.0)  # the subscription is open (after_seq: nothing is missed if it is not)
    with as_(base_url, keys["dave"]) as dave:
        for i in range(3):
            r = dave.post("/v1/cubes/gov-a/memories", json={"text": f"feed note {i}"})
            assert r.status_code == 201
            time.sleep(0.2)
    thread.join(timeout=10)
    assert [e.memory.text for _, e in events] == [f"feed note {i}" for i in range(3)]
    assert all(e.author == "dave" and e.op == "add" for _, e in events)
    # how fast is measured by benchmarks/governance.py (p50/p95 delivery lag), not asserted here


def test_change_feed_replays_after_a_seq_and_ends_when_the_key_is_revoked(
    base_url: str, keys: Keys, cubes: dict[str, str]
) -> None:
    with as_(base_url, keys["alice"]) as alice:
        issued = alice.post("/v1/keys", json={"principal": "alice-bot", "label": "feed"}).json()
        start = alice.get("/v1/cubes/gov-a").json()["seq"]
        alice.post("/v1/cubes/gov-a/memories", json={"text": "replayed note"})
        with httpx.Client(base_url=base_url, headers=bearer(issued["key"]), timeout=30) as bot:
            with bot.stream("GET", "/v1/cubes/gov-a/changes", params={"after_seq": start}) as resp:
                assert resp.status_code == 200
                seen: list[str] = []
                for line in resp.iter_lines():
                    if line.startswith("event:"):
                        seen.append(line[6:].strip())
                    if line.startswith("data:") and seen[-1] == "change":
                        assert json.loads(line[5:])["memory"]["text"] == "replayed note"
                        alice.delete(f"/v1/keys/{issued['info']['key_id']}")
                    if seen and seen[-1] == "error" and line.startswith("data:"):
                        assert json.loads(line[5:])["error"]["code"] == "unauthenticated"
                        break
        assert seen == ["subscribed", "change", "error"]


def test_redaction_on_ingest_is_masked_stored_and_audited(base_url: str, keys: Keys) -> None:
    with as_(base_url, keys["alice"]) as alice:
        r = alice.post(
            "/v1/cubes/gov-a/memories",
            json={
                "text": "Reach Sam at sam@example.org or +44 20 7946 0958; the API key is sk-live-abcdefghijklmn1234"
            },
        )
        item = r.json()
        assert "sam@example.org" not in item["text"] and "sk-live" not in item["text"] and "7946" not in item["text"]
        assert item["provenance"]["redactions"] == {"email": 1, "phone": 1, "api_key": 1}
        stored = alice.get(f"/v1/cubes/gov-a/memories/{item['id']}").json()
        assert stored["text"] == item["text"]
        records = alice.get("/v1/cubes/gov-a/audit", params={"memory_id": item["id"]}).json()["records"]
        assert records[0]["details"]["redacted"] == {"email": 1, "phone": 1, "api_key": 1}
        assert "sam@example.org" not in json.dumps(records)
        # a private key split across two chunks by the MemReader is masked before the split
        pem = (
            "-----BEGIN RSA PRIVATE KEY-----\n"
            + "\n".join(["MIIEpAIBAAKCAQEAx" * 4] * 6)
            + "\n-----END RSA PRIVATE KEY-----"
        )
        body = {"messages": [{"content": f"Here is the deploy key. {pem} Keep it safe."}], "max_chunk_chars": 200}
        added = alice.post("/v1/cubes/gov-a/messages", json=body).json()["items"]
        texts = [alice.get(f"/v1/cubes/gov-a/memories/{i['memory_id']}").json()["text"] for i in added]
        assert "MIIEpAIBAAKCAQEA" not in " ".join(texts) and "[REDACTED:api_key]" in " ".join(texts)
        masked = alice.get("/v1/cubes/gov-a/audit", params={"action": "memory.redact"}).json()["records"]
        assert masked[-1]["details"]["redacted"] == {"api_key": 1}


def test_quotas_refuse_with_429_and_keep_what_is_stored(base_url: str, keys: Keys) -> None:
    with as_(base_url, keys["alice"]) as alice:
        alice.post("/v1/cubes", json={"id": "gov-quota", "quotas": {"max_memories": 2}})
        for i in range(2):
            assert alice.post("/v1/cubes/gov-quota/memories", json={"text": f"kept {i}"}).status_code == 201
        r = alice.post("/v1/cubes/gov-quota/memories/batch", json={"items": [{"text": "a"}, {"text": "b"}]})
        assert r.status_code == 429 and r.json()["error"]["details"]["quota"] == "max_memories"
        raised = alice.patch("/v1/cubes/gov-quota", json={"quotas": {"max_memories": 3, "max_bytes": 40}})
        assert raised.status_code == 200
        assert alice.post("/v1/cubes/gov-quota/memories", json={"text": "x" * 50}).json()["error"]["details"] == {
            "quota": "max_bytes",
            "limit": 40,
        }
        assert alice.post("/v1/cubes/gov-quota/memories", json={"text": "third"}).status_code == 201
        texts = sorted(m["text"] for m in alice.get("/v1/cubes/gov-quota/memories").json()["items"])
        assert texts == ["kept 0", "kept 1", "third"]
        failed = alice.get("/v1/cubes/gov-quota/audit", params={"result": "error"}).json()["records"]
        assert {r["status"] for r in failed} == {429}


def test_sdk_and_cli_manage_keys_sharing_and_audit(base_url: str, admin_key: str, keys: Keys) -> None:
    from typer.testing import CliRunner

    from serve.cli.commands import app as cli

    with MemosClient(base_url, api_key=keys["alice"]) as alice:
        assert alice.whoami().principal == "alice"
        alice.create_cube("gov-sdk")
        alice.share("gov-sdk", "bob", "read")
        assert [g.principal for g in alice.get_cube("gov-sdk").grants] == ["bob"]
        alice.unshare("gov-sdk", "bob")
        assert alice.audit("gov-sdk", action="cube.").records[-1].action == "cube.unshare"
    runner = CliRunner(env={"MEMOS_RAY_URL": base_url, "MEMOS_RAY_API_KEY": admin_key, "COLUMNS": "200"})
    assert runner.invoke(cli, ["principals", "create", "frank"]).exit_code == 0
    issued = runner.invoke(cli, ["keys", "issue", "frank", "--label", "cli"])
    assert issued.exit_code == 0, issued.output
    frank_key = next(line for line in issued.output.splitlines() if line.startswith("mrk_"))
    frank = CliRunner(env={"MEMOS_RAY_URL": base_url, "MEMOS_RAY_API_KEY": frank_key, "COLUMNS": "200"})
    assert "frank [user]" in frank.invoke(cli, ["whoami"]).output
    assert frank.invoke(cli, ["cubes", "create", "frank-cube"]).exit_code == 0
    assert frank.invoke(cli, ["share", "frank-cube", "carol", "--role", "write"]).exit_code == 0
    out = frank.invoke(cli, ["audit", "frank-cube"]).output
    assert "cube.share" in out and "cube.create" in out
    key_id = frank_key[4:16]
    assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 0
    denied = frank.invoke(cli, ["whoami"])
    assert denied.exit_code == 1 and "401 unauthenticated" in denied.output
