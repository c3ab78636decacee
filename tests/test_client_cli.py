"""The SDK (memos_ray/client/) and the CLI (serve/cli/) against canned HTTP answers: no Ray, no server."""

from __future__ import annotations

import functools
import inspect
import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import serve.cli.base as cli_base
import serve.cli.commands as cli
from memos_ray import AsyncMemosClient, MemosClient
from memos_ray.errors import CubeNotFound, MemosError, NotFound
from memos_ray.types import CubeMeta, LifecyclePolicy, MemoryItem, Provenance, Purged

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BASE = "http://memos.test:9000"


def item(memory_id: str = "m1", version: int = 1, text: str = "Alice lives in Lisbon", **kw: Any) -> dict[str, Any]:
    return MemoryItem(
        id=memory_id, cube_id="alice", version=version, text=text, created_at=NOW, updated_at=NOW, **kw
    ).model_dump(mode="json")


def cube(cube_id: str = "alice", **kw: Any) -> dict[str, Any]:
    meta = CubeMeta(id=cube_id, name="Alice", created_at=NOW, updated_at=NOW, memory_count=3, **kw)
    return meta.model_dump(mode="json")


def not_found(code: str = "cube_not_found") -> tuple[int, Any]:
    return 404, {"error": {"code": code, "message": "cube nobody not found", "details": {"cube_id": "nobody"}}}


Route = tuple[int, Any] | Callable[[httpx.Request], tuple[int, Any]]


class Server:
    """A MockTransport handler: canned answers by (method, path), and every request seen."""

    def __init__(self, routes: dict[tuple[str, str], Route]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return httpx.Response(404, json={"error": {"code": "http_error", "message": "Not Found", "details": {}}})
        status, body = route(request) if callable(route) else route
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status) if body is None else httpx.Response(status, json=body)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def sync_client(server: Server) -> MemosClient:
    return MemosClient(BASE, transport=httpx.MockTransport(server))


# ---------------------------------------------------------------- sync SDK


def test_cubes_roundtrip() -> None:
    server = Server(
        {
            ("POST", "/v1/cubes"): (201, cube()),
            ("GET", "/v1/cubes"): (200, {"cubes": [cube(), cube("bob")], "total": 2}),
            ("GET", "/v1/cubes/alice"): (200, cube()),
            ("DELETE", "/v1/cubes/alice"): (204, None),
        }
    )
    with sync_client(server) as mc:
        created = mc.create_cube("alice", name="Alice", quotas={"max_memories": 10})
        assert isinstance(created, CubeMeta) and created.id == "alice" and created.memory_count == 3
        assert server.last.method == "POST" and str(server.last.url) == f"{BASE}/v1/cubes"
        # only what was given travels: no description, no owner
        assert server.body() == {"id": "alice", "name": "Alice", "quotas": {"max_memories": 10}}
        page = mc.list_cubes(offset=5, limit=2)
        assert [c.id for c in page.cubes] == ["alice", "bob"] and page.total == 2
        assert dict(server.last.url.params) == {"offset": "5", "limit": "2"}
        assert mc.get_cube("alice").name == "Alice"
        assert mc.delete_cube("alice") is None
        assert server.last.method == "DELETE"


def test_memory_routes_send_the_right_requests() -> None:
    server = Server(
        {
            ("POST", "/v1/cubes/alice/memories"): (201, item()),
            ("POST", "/v1/cubes/alice/memories/batch"): (201, {"items": [{"memory_id": "m1", "version": 1}]}),
            ("POST", "/v1/cubes/alice/messages"): (201, {"items": [{"memory_id": "m2", "version": 1}] * 2}),
            ("GET", "/v1/cubes/alice/memories/m1"): (200, item(version=2)),
            ("PATCH", "/v1/cubes/alice/memories/m1"): (200, item(version=2, text="Alice lives in Porto")),
            ("DELETE", "/v1/cubes/alice/memories/m1"): (200, item(version=3, state="deleted")),
            ("POST", "/v1/cubes/alice/memories/m1/purge"): (200, {"memory_ids": ["m1", "m4"], "scrubbed": ["m7"]}),
            ("GET", "/v1/cubes/alice/memories/m1/history"): (200, [item(), item(version=2)]),
            ("GET", "/v1/cubes/alice/memories"): (200, {"items": [item()], "total": 1, "offset": 0, "limit": 10}),
        }
    )
    with sync_client(server) as mc:
        added = mc.add("alice", "Alice lives in Lisbon", kind="event", tags=["home"], source={"speaker": "Alice"})
        assert isinstance(added, MemoryItem) and added.id == "m1"
        assert server.body() == {
            "text": "Alice lives in Lisbon",
            "kind": "event",
            "tags": ["home"],
            "source": {"speaker": "Alice"},
        }

        res = mc.add_batch("alice", [{"text": "one"}, {"text": "two", "said_at": "2024-05-01T10:00:00"}])
        assert res.items[0].memory_id == "m1"
        assert server.body() == {"items": [{"text": "one"}, {"text": "two", "said_at": "2024-05-01T10:00:00Z"}]}

        res = mc.add_messages("alice", [{"role": "user", "content": "hi", "speaker": "Bob"}], conversation_id="c1")
        assert len(res.items) == 2
        assert server.body() == {
            "messages": [{"role": "user", "content": "hi", "speaker": "Bob"}],
            "conversation_id": "c1",
        }

        assert mc.get("alice", "m1", version=2).version == 2
        assert dict(server.last.url.params) == {"version": "2"}
        mc.get("alice", "m1")
        assert server.last.url.query == b""

        updated = mc.update("alice", "m1", text="Alice lives in Porto", expected_version=1)
        assert updated.text == "Alice lives in Porto" and server.last.method == "PATCH"
        assert server.body() == {"text": "Alice lives in Porto", "expected_version": 1}  # no nulls for the rest

        deleted = mc.delete("alice", "m1", expected_version=2)
        assert deleted.state == "deleted" and dict(server.last.url.params) == {"expected_version": "2"}
        purged = mc.purge("alice", "m1")
        assert isinstance(purged, Purged) and server.last.method == "POST"
        assert (purged.memory_ids, purged.scrubbed) == (["m1", "m4"], ["m7"])
        assert server.last.content == b""  # a purge sends no body
        assert [m.version for m in mc.history("alice", "m1")] == [1, 2]

        page = mc.list("alice", 0, 10, states=["active", "archived"], kinds=["fact"], tag="home")
        assert page.total == 1 and page.items[0].id == "m1"
        assert server.last.url.params.multi_items() == [
            ("offset", "0"),
            ("limit", "10"),
            ("state", "active"),
            ("state", "archived"),
            ("kind", "fact"),
            ("tag", "home"),
        ]


def test_search_single_and_many_cubes() -> None:
    hit = {"memory": item(), "score": 0.9, "dense_score": 0.8, "bm25_score": None}
    answer = (200, {"hits": [hit], "took_ms": 1.5})
    server = Server({("POST", "/v1/cubes/alice/search"): answer, ("POST", "/v1/search"): answer})
    with sync_client(server) as mc:
        res = mc.search("alice", "where does Alice live?", top_k=3, filter={"tags_any": ["home"]})
        assert res.hits[0].memory.id == "m1" and res.hits[0].score == 0.9
        assert server.last.url.path == "/v1/cubes/alice/search"
        assert server.body() == {
            "query": "where does Alice live?",
            "top_k": 3,
            "mode": "hybrid",
            "filter": {"tags_any": ["home"]},
        }
        mc.search(["alice", "bob"], "Lisbon", mode="bm25", prefer_time={"weight": 0.5})
        assert server.last.url.path == "/v1/search"
        body = server.body()
        assert body["cube_ids"] == ["alice", "bob"] and body["mode"] == "bm25"
        assert body["prefer_time"] == {"weight": 0.5}


def test_lifecycle_fields_and_calls_send_the_right_requests() -> None:
    def patched(request: httpx.Request) -> tuple[int, Any]:
        state = json.loads(request.content).get("state", "active")
        return 200, item(version=4, state=state)

    policy = {"ttl_s": {"event": 86400.0}, "archive_after_s": 2592000.0, "merge_threshold": 0.95}
    server = Server(
        {
            ("POST", "/v1/cubes/alice/memories"): (201, item("m2", supersedes=["m1"])),
            ("PATCH", "/v1/cubes/alice/memories/m1"): patched,
            ("PATCH", "/v1/cubes/alice"): (200, cube(lifecycle=policy)),
            ("POST", "/v1/cubes"): (201, cube(lifecycle={"dedup_threshold": 0.98})),
            ("POST", "/v1/cubes/alice/search"): (200, {"hits": [], "took_ms": 0.5}),
        }
    )
    with sync_client(server) as mc:
        added = mc.add(
            "alice",
            "Alice lives in Porto",
            supersedes=["m1"],
            valid_from=datetime(2024, 3, 1),
            valid_to=datetime(2025, 1, 1, tzinfo=UTC),
        )
        assert added.id == "m2" and added.supersedes == ["m1"]
        assert server.body() == {
            "text": "Alice lives in Porto",
            "valid_from": "2024-03-01T00:00:00Z",  # naive is UTC
            "valid_to": "2025-01-01T00:00:00Z",
            "supersedes": ["m1"],
        }

        server.routes[("POST", "/v1/cubes/alice/memories")] = (200, item())  # ingest dedup: the existing memory
        assert mc.add("alice", "Alice lives in Lisbon!").id == "m1"

        restored = mc.restore("alice", "m1")
        assert isinstance(restored, MemoryItem) and restored.state == "active"
        assert server.last.method == "PATCH" and server.body() == {"state": "active"}
        assert mc.archive("alice", "m1").state == "archived"
        assert server.last.method == "PATCH" and server.body() == {"state": "archived"}

        mc.update("alice", "m1", supersedes=["m0"], valid_to=datetime(2024, 3, 1, tzinfo=UTC), expected_version=3)
        assert server.body() == {"valid_to": "2024-03-01T00:00:00Z", "supersedes": ["m0"], "expected_version": 3}

        meta = mc.update_cube("alice", lifecycle=policy)
        assert isinstance(meta.lifecycle, LifecyclePolicy) and meta.lifecycle.merge_threshold == 0.95
        assert server.last.url.path == "/v1/cubes/alice" and server.body() == {"lifecycle": policy}
        mc.update_cube("alice", lifecycle=LifecyclePolicy(dedup_threshold=0.9))
        assert server.body() == {"lifecycle": {"dedup_threshold": 0.9}}  # only the fields set
        mc.create_cube("bob", lifecycle={"dedup_threshold": 0.98})
        assert server.body() == {"id": "bob", "lifecycle": {"dedup_threshold": 0.98}}

        mc.search("alice", "where does Alice live?", filter={"as_of": datetime(2023, 6, 1, 12, tzinfo=UTC)})
        # states left out, so the server searches superseded memories too
        assert server.body()["filter"] == {"as_of": "2023-06-01T12:00:00Z"}

    before = len(server.requests)
    with sync_client(server) as mc:
        with pytest.raises(ValidationError):  # valid_to must come after valid_from
            mc.add("alice", "x", valid_from=datetime(2024, 1, 2), valid_to=datetime(2024, 1, 1))
        with pytest.raises(ValidationError):
            mc.update_cube("alice", lifecycle={"merge_threshold": 0.2})
        with pytest.raises(ValidationError):
            mc.update_cube("alice", lifecycle={"ttl_s": {"gossip": 10}})
    assert len(server.requests) == before


def test_error_body_becomes_the_servers_error_class() -> None:
    server = Server({("GET", "/v1/cubes/nobody"): not_found(), ("GET", "/v1/health"): (502, "Bad Gateway")})
    with sync_client(server) as mc:
        with pytest.raises(CubeNotFound) as info:  # the server's class, not one catch-all
            mc.get_cube("nobody")
        exc = info.value
        assert isinstance(exc, NotFound) and isinstance(exc, MemosError)
        assert (exc.status_code, exc.code, exc.message) == (404, "cube_not_found", "cube nobody not found")
        assert exc.details == {"cube_id": "nobody"}
        assert str(exc) == "404 cube_not_found: cube nobody not found"
        again = pickle.loads(pickle.dumps(exc))
        assert (again.status_code, again.code, again.details) == (404, "cube_not_found", {"cube_id": "nobody"})

        with pytest.raises(MemosError) as info:
            mc.health()  # a proxy's plain-text error page
        assert (info.value.status_code, info.value.code, info.value.message) == (502, "http_error", "Bad Gateway")


def test_client_side_validation_sends_nothing() -> None:
    server = Server({})
    with sync_client(server) as mc:
        with pytest.raises(ValidationError):
            mc.add("alice", "   ")
        with pytest.raises(ValidationError):
            mc.search("alice", "q", top_k=0)
        with pytest.raises(ValidationError):
            mc.update("alice", "m1", state="deleted")  # only active/archived through update
        with pytest.raises(ValueError):
            mc.list("alice", states=["gone"])
    assert server.requests == []


def test_ids_are_quoted_into_one_path_segment() -> None:
    server = Server({})
    with sync_client(server) as mc, pytest.raises(MemosError):
        mc.get_cube("a/../b")
    assert server.last.url.raw_path == b"/v1/cubes/a%2F..%2Fb"


def test_headers_reach_the_server() -> None:
    server = Server({("GET", "/v1/health"): (200, {"status": "ok", "version": "0.1.0"})})
    with MemosClient(BASE, transport=httpx.MockTransport(server), headers={"X-Api-Key": "k"}) as mc:
        assert mc.health() == {"status": "ok", "version": "0.1.0"}
    assert server.last.headers["x-api-key"] == "k"


# ---------------------------------------------------------------- async SDK


@pytest.mark.asyncio
async def test_async_client_same_requests_and_errors() -> None:
    server = Server(
        {
            ("POST", "/v1/cubes/alice/memories"): (201, item()),
            ("GET", "/v1/cubes/nobody/memories/m1"): not_found(),
            ("GET", "/v1/cubes/alice/memories/m1/history"): (200, [item()]),
        }
    )
    async with AsyncMemosClient(BASE, transport=httpx.MockTransport(server)) as mc:
        added = await mc.add("alice", "Alice lives in Lisbon", tags=["home"])
        assert added.id == "m1" and server.last.method == "POST"
        assert server.body() == {"text": "Alice lives in Lisbon", "tags": ["home"]}
        assert [m.id for m in await mc.history("alice", "m1")] == ["m1"]
        with pytest.raises(CubeNotFound) as info:
            await mc.get("nobody", "m1")
        assert info.value.status_code == 404 and info.value.code == "cube_not_found"


def test_sync_and_async_methods_match() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in vars(cls) if not n.startswith("_") and n not in ("close", "aclose")}

    assert public(MemosClient) == public(AsyncMemosClient)
    assert {"add", "search", "list", "update", "history", "purge", "add_messages"} <= public(MemosClient)
    assert {"restore", "archive"} <= public(MemosClient)
    assert MemosClient.add.__doc__ and MemosClient.add.__name__ == "add"
    sig = inspect.signature(MemosClient().add)  # what help() and IDEs show
    assert list(sig.parameters)[:2] == ["cube_id", "text"] and sig.return_annotation == "MemoryItem"


# ---------------------------------------------------------------- CLI


@pytest.fixture()
def cli_server(monkeypatch: pytest.MonkeyPatch) -> Server:
    """The CLI's MemosClient talks to a Server instead of the network."""
    server = Server({})
    monkeypatch.setattr(cli_base, "MemosClient", functools.partial(MemosClient, transport=httpx.MockTransport(server)))
    return server


def invoke(*args: str) -> Any:
    runner = CliRunner()
    return runner.invoke(cli.app, list(args), env={"COLUMNS": "200", "MEMOS_RAY_URL": BASE})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{'role': 'user'}]", "not valid JSON: Expecting property name"),
        ('[\n  {"role": "user", "content": "hi"},\n  {"role": "user" "content": "x"}\n]', "(line 3, column"),
        ('{"role": "user", "content": "hi"}\n{"role": "user", "content": \n', "line 2: not valid JSON"),
        ('[{"role": "user", "content": "hi"}, {"role": "user"}]', "message 2: content: Field required"),
        ('{"role": "user", "content": "ok"}\n{"role": "robot", "content": "hi"}\n', "message 2 (line 2): role"),
        ('{"messages": "nope"}', "expected a list of messages"),
        ("[]", "no messages"),
        ("  \n", "empty"),
    ],
)
def test_import_bad_file_exits_2(tmp_path: Path, cli_server: Server, content: str, message: str) -> None:
    path = tmp_path / "chat.json"
    path.write_text(content)
    result = invoke("import", "alice", str(path))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.output
    assert cli_server.requests == []


def test_import_missing_file_exits_2(tmp_path: Path, cli_server: Server) -> None:
    result = invoke("import", "alice", str(tmp_path / "absent.jsonl"))
    assert result.exit_code == 2 and "cannot read" in result.stderr


@pytest.mark.parametrize("shape", ["list", "object", "jsonl"])
def test_import_posts_batches(tmp_path: Path, cli_server: Server, shape: str) -> None:
    def answer(request: httpx.Request) -> tuple[int, Any]:
        n = len(json.loads(request.content)["messages"])
        return 201, {"items": [{"memory_id": f"m{i}", "version": 1} for i in range(n)]}

    cli_server.routes[("POST", "/v1/cubes/alice/messages")] = answer
    messages = [{"role": "user", "content": f"message {i}", "speaker": "Bob", "id": f"d{i}"} for i in range(5)]
    path = tmp_path / "chat"
    if shape == "list":
        path.write_text(json.dumps(messages, indent=2))
    elif shape == "object":
        path.write_text(json.dumps({"messages": messages}))
    else:
        path.write_text("\n".join(json.dumps(m) for m in messages) + "\n\n")
    result = invoke("import", "alice", str(path), "--batch-size", "2", "--conversation-id", "c1")
    assert result.exit_code == 0, result.output
    assert [len(cli_server.body(i)["messages"]) for i in range(3)] == [2, 2, 1]
    assert all(cli_server.body(i)["conversation_id"] == "c1" for i in range(3))
    assert cli_server.body(0)["messages"][0] == messages[0]
    assert "5 memories created" in result.stdout


def test_import_api_error_exits_1(tmp_path: Path, cli_server: Server) -> None:
    cli_server.routes[("POST", "/v1/cubes/nobody/messages")] = not_found()
    path = tmp_path / "chat.json"
    path.write_text('[{"content": "hi"}]')
    result = invoke("import", "nobody", str(path))
    assert result.exit_code == 1
    assert "error 404 cube_not_found: cube nobody not found" in result.stderr
    assert "stopped after 0 of 1 messages" in result.stderr


def test_search_arguments(cli_server: Server) -> None:
    hit = {"memory": item(provenance=Provenance(speaker="[Alice]")), "score": 0.75}
    odd = {"memory": item("m2", text="brackets [/] and [bold]x[/bold] stay text"), "score": 0.5}
    answer = (200, {"hits": [hit, odd], "took_ms": 2.0})
    cli_server.routes[("POST", "/v1/search")] = answer
    cli_server.routes[("POST", "/v1/cubes/alice/search")] = answer

    result = invoke("search", "alice", "bob", "where does Alice live?", "--top-k", "3", "--mode", "bm25")
    assert result.exit_code == 0, result.output
    assert cli_server.last.url.path == "/v1/search"
    body = cli_server.body()
    assert (body["cube_ids"], body["query"], body["top_k"], body["mode"]) == (
        ["alice", "bob"],
        "where does Alice live?",
        3,
        "bm25",
    )
    assert "0.7500" in result.stdout and "Alice lives in Lisbon" in result.stdout and "m1" in result.stdout
    assert "[Alice]" in result.stdout and "brackets [/] and [bold]x[/bold] stay text" in result.stdout  # no markup

    result = invoke("search", "alice", "Lisbon")
    assert result.exit_code == 0, result.output
    assert cli_server.last.url.path == "/v1/cubes/alice/search"
    assert cli_server.body() == {"query": "Lisbon", "top_k": 10, "mode": "hybrid"}

    assert invoke("search", "alice", "q", "--mode", "fuzzy").exit_code == 2
    assert invoke("search", "only-a-query").exit_code == 2  # needs CUBE... and QUERY


def test_add_and_global_url(cli_server: Server) -> None:
    cli_server.routes[("POST", "/v1/cubes/alice/memories")] = (201, item())
    args = ["--url", "http://other:1234", "add", "alice", "Alice lives in Lisbon", "-t", "a", "-t", "b"]
    result = CliRunner().invoke(cli.app, [*args, "--kind", "event", "--speaker", "Alice"])
    assert result.exit_code == 0, result.output
    assert str(cli_server.last.url) == "http://other:1234/v1/cubes/alice/memories"
    assert cli_server.body() == {
        "text": "Alice lives in Lisbon",
        "kind": "event",
        "tags": ["a", "b"],
        "source": {"speaker": "Alice"},
    }
    assert "added m1" in result.stdout
    assert invoke("add", "alice", "x", "--kind", "gossip").exit_code == 2


def test_add_lifecycle_options_and_search_as_of(cli_server: Server) -> None:
    cli_server.routes[("POST", "/v1/cubes/alice/memories")] = (201, item("m2"))
    cli_server.routes[("POST", "/v1/cubes/alice/search")] = (200, {"hits": [], "took_ms": 0.5})
    args = ["--supersedes", "m1", "--supersedes", "m0", "--valid-from", "2024-03-01", "--valid-to", "2025-01-01T00:00Z"]
    result = invoke("add", "alice", "Alice lives in Porto", *args)
    assert result.exit_code == 0, result.output
    assert cli_server.body() == {
        "text": "Alice lives in Porto",
        "kind": "fact",
        "valid_from": "2024-03-01T00:00:00Z",
        "valid_to": "2025-01-01T00:00:00Z",
        "supersedes": ["m1", "m0"],
    }
    assert "added m2" in result.stdout

    result = invoke("search", "alice", "where?", "--as-of", "2023-06-01T12:00:00+02:00")
    assert result.exit_code == 0, result.output
    assert cli_server.body()["filter"] == {"as_of": "2023-06-01T10:00:00Z"}

    before = len(cli_server.requests)
    assert invoke("add", "alice", "x", "--valid-from", "last tuesday").exit_code == 2
    assert invoke("search", "alice", "q", "--as-of", "2023-13-01").exit_code == 2
    result = invoke("add", "alice", "x", "--valid-from", "2024-02-01", "--valid-to", "2024-01-01")
    assert result.exit_code == 2 and "valid_to must not be earlier" in result.stderr
    assert len(cli_server.requests) == before


def test_restore_archive_and_purge_commands(cli_server: Server) -> None:
    def patched(request: httpx.Request) -> tuple[int, Any]:
        return 200, item(version=5, state=json.loads(request.content)["state"])

    cli_server.routes[("PATCH", "/v1/cubes/alice/memories/m1")] = patched
    cli_server.routes[("POST", "/v1/cubes/alice/memories/m1/purge")] = (
        200,
        {"memory_ids": ["m1", "m4"], "scrubbed": ["m7"]},
    )
    result = invoke("restore", "alice", "m1")
    assert result.exit_code == 0, result.output
    assert cli_server.last.method == "PATCH" and cli_server.body() == {"state": "active"}
    assert "restored m1 (version 5) in alice: active" in result.stdout

    result = invoke("archive", "alice", "m1")
    assert result.exit_code == 0, result.output
    assert cli_server.body() == {"state": "archived"} and "archived m1 (version 5)" in result.stdout

    result = invoke("purge", "alice", "m1")
    assert result.exit_code == 0, result.output
    assert cli_server.last.url.path == "/v1/cubes/alice/memories/m1/purge"
    assert "purged from alice: m1, m4" in result.stdout and "context scrubbed in: m7" in result.stdout

    result = invoke("restore", "alice", "nope")  # no route: the server's 404
    assert result.exit_code == 1 and result.stderr.startswith("error 404")


def test_lifecycle_command(cli_server: Server) -> None:
    def patched(request: httpx.Request) -> tuple[int, Any]:
        return 200, cube(lifecycle=json.loads(request.content)["lifecycle"])

    cli_server.routes[("PATCH", "/v1/cubes/alice")] = patched
    cli_server.routes[("GET", "/v1/cubes/alice")] = (200, cube())

    args = ["--ttl", "event=86400", "--ttl", "note=3600", "--archive-after", "2592000", "--merge-threshold", "0.95"]
    result = invoke("lifecycle", "alice", *args, "--dedup-threshold", "0.98", "--archive-below-salience", "2.5")
    assert result.exit_code == 0, result.output
    assert cli_server.last.method == "PATCH" and cli_server.last.url.path == "/v1/cubes/alice"
    assert cli_server.body() == {
        "lifecycle": {
            "ttl_s": {"event": 86400.0, "note": 3600.0},
            "archive_after_s": 2592000.0,
            "archive_below_salience": 2.5,
            "merge_threshold": 0.95,
            "dedup_threshold": 0.98,
        }
    }
    for shown in ("ttl event", "86400 s", "ttl note", "3600 s", "2592000 s", "salience", "2.5", "0.95", "0.98"):
        assert shown in result.stdout, shown

    result = invoke("lifecycle", "alice", "--archive-after", "60")
    assert result.exit_code == 0, result.output
    assert cli_server.body() == {"lifecycle": {"archive_after_s": 60.0}}  # replaced whole
    assert "ttl" in result.stdout and "off" in result.stdout

    result = invoke("lifecycle", "alice", "--off")
    assert result.exit_code == 0, result.output
    assert cli_server.body() == {"lifecycle": {}}

    result = invoke("lifecycle", "alice")  # no option: shows the policy, changes nothing
    assert result.exit_code == 0, result.output
    assert cli_server.last.method == "GET" and "the server's default" in result.stdout

    before = len(cli_server.requests)
    for bad in (["--ttl", "event"], ["--ttl", "gossip=10"], ["--ttl", "event=-5"], ["--merge-threshold", "0.1"]):
        result = invoke("lifecycle", "alice", *bad)
        assert result.exit_code == 2, (bad, result.output)
    assert invoke("lifecycle", "alice", "--off", "--archive-after", "60").exit_code == 2
    assert len(cli_server.requests) == before


def test_import_counts_memories_already_held(tmp_path: Path, cli_server: Server) -> None:
    refs = [{"memory_id": f"m{i}", "version": 1} for i in range(3)]
    cli_server.routes[("POST", "/v1/cubes/alice/messages")] = (201, {"items": refs, "duplicates": [1]})
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([{"content": f"message {i}"} for i in range(3)]))
    result = invoke("import", "alice", str(path))
    assert result.exit_code == 0, result.output
    assert "2 memories created (1 already held)" in result.stdout


def test_cubes_commands(cli_server: Server) -> None:
    cli_server.routes[("GET", "/v1/cubes")] = (200, {"cubes": [cube()], "total": 1})
    cli_server.routes[("POST", "/v1/cubes")] = (201, cube())
    cli_server.routes[("DELETE", "/v1/cubes/alice")] = (204, None)
    cli_server.routes[("DELETE", "/v1/cubes/nobody")] = not_found()

    result = invoke("cubes", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert "alice" in result.stdout and "1 of 1 cubes" in result.stdout
    assert dict(cli_server.last.url.params) == {"offset": "0", "limit": "5"}

    result = invoke("cubes", "create", "alice", "--name", "Alice")
    assert result.exit_code == 0 and cli_server.body() == {"id": "alice", "name": "Alice"}
    assert invoke("cubes", "delete", "alice").exit_code == 0

    result = invoke("cubes", "delete", "nobody")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error 404 cube_not_found: cube nobody not found"


def test_invalid_arguments_exit_2_without_a_request(cli_server: Server) -> None:
    before = len(cli_server.requests)
    for args in (("cubes", "create", "../etc"), ("add", "alice", "   ")):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: invalid input:") and "Traceback" not in result.output
    assert len(cli_server.requests) == before


def test_status_and_unreachable_server(cli_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_server.routes[("GET", "/v1/health")] = (200, {"status": "ok", "version": "0.1.0"})
    stats = {"version": "0.1.0", "directory": {"cubes": 4, "live": 2}, "embedder": {"requests": 7}}
    cli_server.routes[("GET", "/v1/status")] = (200, stats)
    result = invoke("status")
    assert result.exit_code == 0, result.output
    assert "ok (version 0.1.0)" in result.stdout and "live" in result.stdout and "requests" in result.stdout

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(cli_base, "MemosClient", functools.partial(MemosClient, transport=httpx.MockTransport(refuse)))
    result = invoke("status")
    assert result.exit_code == 1 and "ConnectError" in result.stderr and "Traceback" not in result.output


def test_up_config_and_help(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMOS_RAY_PORT", "8100")
    monkeypatch.setenv("MEMOS_RAY_HOST", "0.0.0.0")
    config = cli._up_config(None, None, tmp_path / "d", 5)
    assert (config.serve.host, config.serve.port) == ("0.0.0.0", 8100)  # env kept where no option is given
    assert config.storage.data_dir == tmp_path / "d" and config.directory.max_live_cubes == 5
    assert cli._up_config("127.0.0.1", 9000, None, None).serve.port == 9000
    assert config.llm.model == "smollm2-135m-instruct"  # the packaged default
    monkeypatch.setenv("MEMOS_RAY_MODEL", "/models/qwen")
    assert cli._up_config(None, None, None, None).llm.model == "/models/qwen"
    assert cli._up_config(None, None, None, None, "/models/mine.gguf").llm.model == "/models/mine.gguf"

    result = invoke("up", "--port", "99999")  # rejected before Ray is touched
    assert result.exit_code == 2 and "invalid configuration" in result.stderr

    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("up", "add", "search", "cubes", "status", "import", "restore", "archive", "purge", "lifecycle"):
        assert command in result.stdout
