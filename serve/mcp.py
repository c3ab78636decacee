"""The MCP server: memos-ray's memory as tools for any MCP client (an agent framework, an IDE, a desktop app).

One server object, two transports: stdio (``memos-ray mcp``, a local process) and streamable HTTP (mounted on the
app at ``/mcp``). Every tool is a call of the SDK against the REST API with the caller's own key: over HTTP the
``Authorization`` header the MCP client sent, over stdio the key the process was started with. So a tool can do
exactly what that key can do over REST, no more, and each call is authorized and audited by the same routes (no
second path to the cubes that could drift from the first). A refusal comes back as a tool error naming the status
and the reason (``403 forbidden: ...``), which the model reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

from memos_ray import __version__
from memos_ray.client import AsyncMemosClient
from memos_ray.errors import MemosError

Json = dict[str, Any]
ClientFor = Callable[[Context], AsyncMemosClient]
"""Makes the SDK client a tool call runs with: the caller's key, this server's URL."""

INSTRUCTIONS = (
    "memos-ray is the user's long-term memory, kept in cubes (one per person, team or topic). Search a cube "
    "before answering from memory; add what is worth keeping; update a memory when a fact changes (its versions "
    "are kept); chat answers from the cubes' memories with the server's model."
)


def _dump(value: BaseModel | list[BaseModel]) -> Any:
    if isinstance(value, list):
        return [v.model_dump(mode="json", exclude_none=True) for v in value]
    return value.model_dump(mode="json", exclude_none=True)


def build_mcp(client_for: ClientFor) -> MCPServer:
    mcp = MCPServer("memos-ray", version=__version__, instructions=INSTRUCTIONS)

    async def run(ctx: Context, what: Callable[[AsyncMemosClient], Any]) -> Any:
        async with client_for(ctx) as mc:
            try:
                return _dump(await what(mc))
            except MemosError as exc:  # the REST answer's status and message, for the model to read
                raise ToolError(str(exc)) from None

    @mcp.tool()
    async def list_cubes(ctx: Context) -> Json:
        """The memory cubes this key may read: id, name, owner, memory count."""
        return {"cubes": (await run(ctx, lambda mc: mc.list_cubes(0, 1000)))["cubes"]}

    @mcp.tool()
    async def search(ctx: Context, cube_ids: list[str], query: str, top_k: int = 5) -> Json:
        """Search one or more cubes for memories relevant to ``query``; hits come best first, with their scores."""
        return await run(ctx, lambda mc: mc.search(cube_ids[0] if len(cube_ids) == 1 else cube_ids, query, top_k=top_k))

    @mcp.tool()
    async def add(ctx: Context, cube_id: str, text: str, tags: list[str] | None = None) -> Json:
        """Remember ``text`` in a cube (write role); returns the stored memory with its id and version."""
        return await run(ctx, lambda mc: mc.add(cube_id, text, tags=tags))

    @mcp.tool()
    async def update(
        ctx: Context, cube_id: str, memory_id: str, text: str, expected_version: int | None = None
    ) -> Json:
        """Change a memory's text, making a new version (earlier ones are kept); ``expected_version`` refuses the
        change if someone else changed it first."""
        return await run(ctx, lambda mc: mc.update(cube_id, memory_id, text=text, expected_version=expected_version))

    @mcp.tool()
    async def delete(ctx: Context, cube_id: str, memory_id: str) -> Json:
        """Delete a memory (it leaves search; its history stays readable by the cube's readers)."""
        return await run(ctx, lambda mc: mc.delete(cube_id, memory_id))

    @mcp.tool()
    async def history(ctx: Context, cube_id: str, memory_id: str) -> Json:
        """Every version of a memory, oldest first, with who wrote each and where it came from."""
        return {"versions": await run(ctx, lambda mc: mc.history(cube_id, memory_id))}

    @mcp.tool()
    async def share(
        ctx: Context, cube_id: str, principal: str, role: Literal["read", "write", "admin"] = "read"
    ) -> Json:
        """Give a user, agent or team a role on a cube (admin role on it needed)."""
        return await run(ctx, lambda mc: mc.share(cube_id, principal, role))

    @mcp.tool()
    async def chat(
        ctx: Context, cube_ids: list[str], question: str, max_tokens: int = 128, remember: bool = False
    ) -> Json:
        """Ask the server's model, answering from the cubes' memories; returns the answer, the memories it used
        and what the KV cache did. ``remember``: the exchange becomes memories of the (single) cube."""
        answer = await run(
            ctx, lambda mc: mc.chat(cube_ids, question, max_tokens=max_tokens, remember=remember or None)
        )
        keep = ("text", "memories_used", "kv", "adapter", "remembered", "ttft_ms")
        return {k: answer[k] for k in keep if k in answer}

    return mcp


def http_client_for(base_url: str) -> ClientFor:
    """Over streamable HTTP: the key the MCP client sent with this request."""

    def client_for(ctx: Context) -> AsyncMemosClient:
        sent = {k: v for k, v in (ctx.headers or {}).items() if k.lower() in ("authorization", "x-api-key")}
        if not sent:  # the app's middleware answers such a request 401 before it gets here
            raise ToolError("401 unauthenticated: send 'Authorization: Bearer <key>' with the MCP requests")
        return AsyncMemosClient(base_url, headers=sent, timeout=300)

    return client_for


def stdio_client_for(base_url: str, api_key: str | None) -> ClientFor:
    """Over stdio: the key this process was started with (``--key`` or ``$MEMOS_RAY_API_KEY``)."""
    return lambda ctx: AsyncMemosClient(base_url, api_key=api_key, timeout=300)


__all__ = ["build_mcp", "http_client_for", "stdio_client_for"]
