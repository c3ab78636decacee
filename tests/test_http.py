"""The HTTP API through the real Serve app (proxy -> FastAPI ingress -> actors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import bearer


@pytest.fixture(scope="module")
def http(base_url: str, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60, headers=bearer(api_key)) as client:
        yield client


@pytest.fixture(scope="module")
def cube(http: httpx.Client) -> str:
    r = http.post("/v1/cubes", json={"id": "http-main", "name": "HTTP tests"})
    assert r.status_code == 201, r.text
    return "http-main"


def add(http: httpx.Client, cube: str, text: str, **kw: Any) -> dict[str, Any]:
    r = http.post(f"/v1/cubes/{cube}/memories", json={"text": text, **kw})
    assert r.status_code == 201, r.text
    return r.json()


def state_of(http: httpx.Client, cube: str) -> tuple[int, int]:
    meta = http.get(f"/v1/cubes/{cube}").json()
    return meta["seq"], meta["memory_count"]


def test_health_and_openapi(http: httpx.Client) -> None:
    assert http.get("/v1/health").json()["status"] == "ok"
    spec = http.get("/openapi.json").json()
    assert "/v1/cubes/{cube_id}/search" in spec["paths"]
    assert http.get("/docs").status_code == 200


def test_the_openapi_says_what_the_service_does(http: httpx.Client, admin_key: str) -> None:
    spec = http.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            if path != "/v1/health":  # every route but the health check names its refusals, in one body
                assert {"401", "404", "422", "503"} <= codes, (method, path, codes)
                assert op["responses"]["404"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"
                }
            for p in op.get("parameters", []):
                if p["in"] == "path":  # an id the service would refuse is not admitted by the spec either
                    assert "pattern" in p["schema"] or "enum" in p["schema"], (path, p)
    # the cube's audit route takes no cube_id query (it is the path's)
    cube_audit = spec["paths"]["/v1/cubes/{cube_id}/audit"]["get"]["parameters"]
    assert [p["name"] for p in cube_audit if p["name"] == "cube_id"] == ["cube_id"]
    with httpx.Client(base_url=str(http.base_url), headers=bearer(admin_key), timeout=60) as admin:
        number = admin.get("/v1/audit", params={"since": "1700000000"})  # the spec says date-time: so does the service
        assert number.status_code == 422 and "ISO 8601" in number.json()["error"]["message"]
        assert admin.get("/v1/audit", params={"since": "2026-01-01T00:00:00Z", "limit": 1}).status_code == 200


def test_memory_lifecycle(http: httpx.Client, cube: str) -> None:
    m = add(http, cube, "Ann's favourite colour is green.", tags=["profile"], kind="preference")
    assert (m["version"], m["kind"], m["tags"]) == (1, "preference", ["profile"])
    assert http.get(f"/v1/cubes/{cube}/memories/{m['id']}").json()["text"] == m["text"]

    r = http.patch(
        f"/v1/cubes/{cube}/memories/{m['id']}", json={"text": "Ann's favourite colour is blue.", "expected_version": 1}
    )
    assert r.status_code == 200 and r.json()["version"] == 2
    r = http.patch(f"/v1/cubes/{cube}/memories/{m['id']}", json={"tags": ["x"], "expected_version": 1})
    assert r.status_code == 409 and r.json()["error"]["code"] == "version_conflict"

    hist = http.get(f"/v1/cubes/{cube}/memories/{m['id']}/history").json()
    assert [h["version"] for h in hist] == [1, 2] and "green" in hist[0]["text"]
    assert http.get(f"/v1/cubes/{cube}/memories/{m['id']}", params={"version": 1}).json()["text"] == hist[0]["text"]

    hits = http.post(f"/v1/cubes/{cube}/search", json={"query": "what colour does Ann like?", "top_k": 3}).json()[
        "hits"
    ]
    assert hits[0]["memory"]["id"] == m["id"] and "blue" in hits[0]["memory"]["text"]

    r = http.delete(f"/v1/cubes/{cube}/memories/{m['id']}")
    assert r.status_code == 200 and r.json()["state"] == "deleted" and r.json()["version"] == 3
    hits = http.post(f"/v1/cubes/{cube}/search", json={"query": "what colour does Ann like?"}).json()["hits"]
    assert m["id"] not in [h["memory"]["id"] for h in hits]
    listed = http.get(f"/v1/cubes/{cube}/memories", params={"state": ["deleted"]}).json()
    assert m["id"] in [i["id"] for i in listed["items"]]

    assert http.post(f"/v1/cubes/{cube}/memories/{m['id']}/purge").status_code == 200
    assert http.get(f"/v1/cubes/{cube}/memories/{m['id']}").status_code == 404


def test_batch_list_paging_and_filters(http: httpx.Client) -> None:
    assert http.post("/v1/cubes", json={"id": "http-batch"}).status_code == 201
    items = [
        {
            "text": f"note {i} about {'cats' if i % 2 else 'dogs'}",
            "tags": ["odd" if i % 2 else "even"],
            "said_at": f"2024-01-{i + 1:02d}T12:00:00Z",
        }
        for i in range(12)
    ]
    r = http.post("/v1/cubes/http-batch/memories/batch", json={"items": items})
    assert r.status_code == 201 and len(r.json()["items"]) == 12
    page1 = http.get("/v1/cubes/http-batch/memories", params={"limit": 5}).json()
    page3 = http.get("/v1/cubes/http-batch/memories", params={"limit": 5, "offset": 10}).json()
    assert page1["total"] == 12 and len(page1["items"]) == 5 and len(page3["items"]) == 2
    assert len(http.get("/v1/cubes/http-batch/memories", params={"tag": "odd"}).json()["items"]) == 6

    def search(**body: Any) -> list[str]:
        r = http.post("/v1/cubes/http-batch/search", json={"query": "cats", "top_k": 20, **body})
        assert r.status_code == 200, r.text
        return [h["memory"]["text"] for h in r.json()["hits"]]

    assert all("cats" in t for t in search(filter={"tags_any": ["odd"]}))
    window = search(filter={"said_after": "2024-01-03T00:00:00Z", "said_before": "2024-01-06T00:00:00Z"})
    assert sorted(window) == ["note 2 about dogs", "note 3 about cats", "note 4 about dogs"]
    recent = search(mode="bm25", prefer_time={"anchor": "2024-01-12T12:00:00Z", "half_life_days": 1, "weight": 0.9})
    assert recent[0] == "note 11 about cats"


def test_multi_cube_search_and_messages(http: httpx.Client) -> None:
    for cid in ("team-a", "team-b"):
        assert http.post("/v1/cubes", json={"id": cid}).status_code == 201
    long = "We shipped the release. " * 80
    r = http.post(
        "/v1/cubes/team-a/messages",
        json={
            "conversation_id": "standup",
            "max_chunk_chars": 400,
            "messages": [
                {
                    "role": "user",
                    "speaker": "Dana",
                    "content": "The database migration is scheduled for Friday.",
                    "timestamp": "2024-03-01T09:00:00Z",
                    "id": "m1",
                },
                {"role": "user", "speaker": "Eli", "content": long},
            ],
        },
    )
    assert r.status_code == 201 and len(r.json()["items"]) > 2
    add(http, "team-b", "The migration was moved to Monday.", source={"speaker": "Fay"})
    r = http.post(
        "/v1/search", json={"query": "when is the database migration?", "cube_ids": ["team-a", "team-b"], "top_k": 2}
    )
    hits = r.json()["hits"]
    assert {h["memory"]["cube_id"] for h in hits} == {"team-a", "team-b"}
    dana = next(h["memory"] for h in hits if h["memory"]["cube_id"] == "team-a")
    assert dana["provenance"]["speaker"] == "Dana" and dana["said_at"].startswith("2024-03-01T09:00")
    assert dana["provenance"]["source_type"] == "message" and dana["provenance"]["conversation_id"] == "standup"
    r = http.post("/v1/search", json={"query": "x", "cube_ids": ["team-a", "no-such-cube"]})
    assert r.status_code == 404


BAD_REQUESTS = [
    (
        "post",
        "/v1/cubes/{cube}/memories",
        {"content": b'{"text": "unterminated', "headers": {"content-type": "application/json"}},
        400,
    ),
    ("post", "/v1/cubes/{cube}/memories", {"json": {}}, 422),
    ("post", "/v1/cubes/{cube}/memories", {"json": {"text": 42}}, 422),
    ("post", "/v1/cubes/{cube}/memories", {"json": {"text": "ok", "kind": "poem"}}, 422),
    ("post", "/v1/cubes/{cube}/memories", {"json": {"text": "ok", "said_at": "yesterday"}}, 422),
    ("post", "/v1/cubes/{cube}/memories", {"json": {"text": "x" * 16_001}}, 422),
    ("post", "/v1/cubes/{cube}/memories", {"json": {"text": "ok", "owner": "mallory"}}, 422),
    (
        "post",
        "/v1/cubes/{cube}/memories",
        {"content": b"x" * (5 * 1024 * 1024), "headers": {"content-type": "application/json"}},
        413,
    ),
    ("post", "/v1/cubes/{cube}/memories/batch", {"json": {"items": [{"text": "fine"}, {"text": ""}]}}, 422),
    ("post", "/v1/cubes/{cube}/memories/batch", {"json": {"items": [{"text": "y"}] * 1001}}, 422),
    ("post", "/v1/cubes/no-such-cube/memories", {"json": {"text": "ok"}}, 404),
    ("get", "/v1/cubes/{cube}/memories/m000000000000deadbeef00", {}, 404),
    ("patch", "/v1/cubes/{cube}/memories/m000000000000deadbeef00", {"json": {"tags": ["a"]}}, 404),
    ("delete", "/v1/cubes/{cube}/memories/m000000000000deadbeef00", {}, 404),
    ("get", "/v1/cubes/a.b/memories", {}, 422),
    ("get", "/v1/cubes/..%2F..%2Fetc/memories", {}, 404),
    ("get", "/v1/cubes/{cube}/memories/..%2Fsecret", {}, 404),
    ("get", "/v1/cubes/{cube}/memories", {"params": {"limit": 0}}, 422),
    ("post", "/v1/cubes/{cube}/search", {"json": {"query": ""}}, 422),
    ("post", "/v1/cubes/{cube}/search", {"json": {"query": "x", "top_k": 1000}}, 422),
    ("post", "/v1/cubes", {"json": {"id": "../../etc"}}, 422),
    ("post", "/v1/cubes", {"json": {"id": "http-main"}}, 409),
]


@pytest.mark.parametrize(("method", "path", "kw", "status"), BAD_REQUESTS)
def test_bad_input_gets_4xx_and_changes_nothing(
    http: httpx.Client, cube: str, method: str, path: str, kw: dict[str, Any], status: int
) -> None:
    keep = add(http, cube, "a memory that must survive bad requests")
    before = state_of(http, cube)
    r = http.request(method.upper(), path.format(cube=cube), **kw)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] and body["error"]["message"]
    assert state_of(http, cube) == before
    assert http.get(f"/v1/cubes/{cube}/memories/{keep['id']}").json()["version"] == 1


def test_streamed_body_over_the_limit_gets_413(http: httpx.Client, cube: str) -> None:
    before = state_of(http, cube)

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"text": "'
        for _ in range(80):
            yield b"x" * 65_536
        yield b'"}'

    r = http.post(f"/v1/cubes/{cube}/memories", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert state_of(http, cube) == before


def test_whitespace_only_content_is_rejected(http: httpx.Client, cube: str) -> None:
    before = state_of(http, cube)
    r = http.post(f"/v1/cubes/{cube}/messages", json={"messages": [{"content": "   "}]})
    assert r.status_code == 422, r.text
    m = add(http, cube, "keep me")
    r = http.patch(f"/v1/cubes/{cube}/memories/{m['id']}", json={"text": "  \n "})
    assert r.status_code == 422, r.text
    assert http.get(f"/v1/cubes/{cube}/memories/{m['id']}").json()["version"] == 1
    assert state_of(http, cube)[1] == before[1] + 1


def test_cube_crud(http: httpx.Client) -> None:
    r = http.post("/v1/cubes", json={"name": "generated id"})
    assert r.status_code == 201
    cid = r.json()["id"]
    add(http, cid, "temporary")
    assert cid in [c["id"] for c in http.get("/v1/cubes").json()["cubes"]]
    assert http.get(f"/v1/cubes/{cid}").json()["memory_count"] == 1
    assert http.delete(f"/v1/cubes/{cid}").status_code == 204
    assert http.get(f"/v1/cubes/{cid}").status_code == 404
    assert http.delete(f"/v1/cubes/{cid}").status_code == 404


def test_status_is_for_administrators(http: httpx.Client, base_url: str, admin_key: str) -> None:
    assert http.get("/v1/status").status_code == 403  # counters over every tenant's cubes
    body = httpx.get(f"{base_url}/v1/status", headers=bearer(admin_key), timeout=30).json()
    assert body["directory"]["live"] >= 1 and body["embedder"]["sentences"] > 0


def test_sdk_and_cli_against_the_real_server(base_url: str, api_key: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import json

    from typer.testing import CliRunner

    from memos_ray import AsyncMemosClient, MemosClient
    from memos_ray.errors import VersionConflict
    from serve.cli.commands import app as cli

    with MemosClient(base_url, api_key=api_key) as memos:
        memos.create_cube("sdk-team", name="Team memory")
        item = memos.add("sdk-team", "The deploy window is Thursday afternoon.", tags=["ops"])
        v2 = memos.update("sdk-team", item.id, text="The deploy window moved to Friday.", expected_version=1)
        assert v2.version == 2
        with pytest.raises(VersionConflict) as err:
            memos.update("sdk-team", item.id, tags=["x"], expected_version=1)
        assert (err.value.status_code, err.value.code) == (409, "version_conflict")
        assert memos.history("sdk-team", item.id)[0].text.endswith("Thursday afternoon.")

    async def async_search():  # type: ignore[no-untyped-def]
        async with AsyncMemosClient(base_url, api_key=api_key) as memos:
            return await memos.search(["sdk-team"], "when do we deploy?", top_k=3)

    hits = asyncio.run(async_search()).hits
    assert hits[0].memory.id == item.id and "Friday" in hits[0].memory.text

    conversation = tmp_path / "conv.jsonl"
    lines = [
        {"role": "user", "speaker": "Gus", "content": f"Line {i}: the boat is called Marlin {i}."} for i in range(7)
    ]
    conversation.write_text("\n".join(json.dumps(line) for line in lines))
    runner = CliRunner(env={"MEMOS_RAY_API_KEY": api_key})
    result = runner.invoke(cli, ["--url", base_url, "cubes", "create", "cli-cube"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["--url", base_url, "import", "cli-cube", str(conversation), "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "7 memories created" in result.output
    with MemosClient(base_url, api_key=api_key) as memos:
        listed = memos.list("cli-cube", limit=100).items
        by_text = {m.text: m for m in listed}
        # the context of the first message of the second batch crossed the request boundary
        assert by_text["Line 3: the boat is called Marlin 3."].context == "Gus: Line 2: the boat is called Marlin 2."
    result = runner.invoke(cli, ["--url", base_url, "search", "cli-cube", "what is the boat called?"])
    assert result.exit_code == 0 and "Marlin" in result.output
