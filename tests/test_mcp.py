"""The MCP server, through the SDK's own client session over both transports (streamable HTTP on the app,
stdio from ``memos-ray mcp``): the tools work, and a key can do over MCP exactly what it can over REST, audited."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.helpers import bearer, user_key

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

TOOLS = {"search", "add", "update", "delete", "history", "list_cubes", "share", "chat"}


@asynccontextmanager
async def over_http(base_url: str, key: str) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient(headers=bearer(key), timeout=300) as http:
        async with streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@asynccontextmanager
async def over_stdio(base_url: str, key: str) -> AsyncIterator[ClientSession]:
    command = [sys.executable, "-c", "from serve.cli import main; main()", "--url", base_url, "--api-key", key, "mcp"]
    server = StdioServerParameters(command=command[0], args=command[1:])
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def use(session: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None  # every tool answers one JSON object
    return result.structured_content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error
    return str(result.content[0].text).removeprefix(f"Error executing tool {tool}: ")  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def team(base_url: str, api_key: str) -> str:
    with httpx.Client(base_url=base_url, headers=bearer(api_key), timeout=60) as http:
        assert http.post("/v1/cubes", json={"id": "mcp-team"}).status_code == 201
        http.post("/v1/cubes/mcp-team/memories", json={"text": "The release train leaves every second Tuesday."})
    return "mcp-team"


async def test_the_tools_over_streamable_http(base_url: str, api_key: str, team: str) -> None:
    async with over_http(base_url, api_key) as mcp:
        assert TOOLS <= {t.name for t in (await mcp.list_tools()).tools}
        assert team in {c["id"] for c in (await use(mcp, "list_cubes"))["cubes"]}
        added = await use(mcp, "add", cube_id=team, text="The deploy key lives in the vault.", tags=["ops"])
        hits = (await use(mcp, "search", cube_ids=[team], query="where is the deploy key?"))["hits"]
        assert hits[0]["memory"]["id"] == added["id"] and hits[0]["score"] > 0
        changed = await use(mcp, "update", cube_id=team, memory_id=added["id"], text="The deploy key is in Vault 2.")
        assert changed["version"] == 2
        versions = (await use(mcp, "history", cube_id=team, memory_id=added["id"]))["versions"]
        assert [v["version"] for v in versions] == [1, 2]
        assert "409" in await refused(mcp, "update", cube_id=team, memory_id=added["id"], text="x", expected_version=1)
        answer = await use(mcp, "chat", cube_ids=[team], question="When does the release train leave?", max_tokens=8)
        assert answer["text"] and answer["memories_used"] and answer["kv"]["status"]
        assert (await use(mcp, "delete", cube_id=team, memory_id=added["id"]))["state"] == "deleted"
    with httpx.Client(base_url=base_url, headers=bearer(api_key), timeout=60) as http:  # audited as over REST
        audit = http.get(f"/v1/cubes/{team}/audit", params={"memory_id": added["id"]}).json()["records"]
    assert {"memory.add", "memory.update", "memory.delete"} <= {r["action"] for r in audit}
    assert {r["principal"] for r in audit} == {"tester"}


async def test_a_key_reaches_over_mcp_only_what_it_reaches_over_rest(base_url: str, api_key: str, team: str) -> None:
    mallory = user_key(base_url, "mcp-mallory")
    async with over_http(base_url, mallory) as mcp:
        assert team not in {c["id"] for c in (await use(mcp, "list_cubes"))["cubes"]}
        denied = await refused(mcp, "search", cube_ids=[team], query="release")
        assert denied.startswith(("403", "404"))
    async with over_http(base_url, api_key) as owner:
        await use(owner, "share", cube_id=team, principal="mcp-mallory", role="read")
    async with over_stdio(base_url, mallory) as mcp:  # the same rules over stdio
        assert (await use(mcp, "search", cube_ids=[team], query="release train"))["hits"]
        assert (await refused(mcp, "add", cube_id=team, text="Mallory was here.")).startswith("403")
    with httpx.Client(base_url=base_url, headers=bearer(api_key), timeout=60) as http:
        audit = http.get(f"/v1/cubes/{team}/audit", params={"principal": "mcp-mallory"}).json()["records"]
    assert any(r["result"] == "denied" for r in audit)
