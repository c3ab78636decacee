"""``memos-ray chat`` (a question answered from the cubes' memories, streamed) and ``memos-ray mcp`` (the MCP
server over stdio, for an agent framework or a desktop app to start)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from memos_ray.types import ChatResponse
from serve.cli.base import connect, local_admin_key, out

CHAT = "Memories"
CONNECT = "Connect agents"


def chat(
    ctx: typer.Context,
    cubes: Annotated[list[str], typer.Argument(help="one or more cube ids", show_default=False)],
    question: Annotated[str, typer.Argument(help="the question (last argument)")],
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1, max=512)] = 128,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=0, max=20, help="memories retrieved")] = 5,
    remember: Annotated[bool, typer.Option(help="write the exchange back to the cube as memories")] = False,
    kv: Annotated[bool, typer.Option(help="use the cubes' KV caches (activation memory)")] = True,
) -> None:
    """Ask the server's model, answering from the cubes' memories: CUBE... QUESTION. The answer streams; then the
    memories it used and what the KV cache did."""
    response: ChatResponse | None = None
    with connect(ctx) as client:
        pieces = client.chat_stream(
            cubes, question, max_tokens=max_tokens, top_k=top_k, remember=remember or None, use_activation_memory=kv
        )
        for piece in pieces:
            if isinstance(piece, ChatResponse):
                response = piece
            else:
                out.print(escape(piece), end="", soft_wrap=True)
    out.print()
    if response is None:
        return
    kv_info = response.kv
    out.print(
        escape(
            f"kv: {kv_info.status} ({kv_info.tokens} cached tokens, worker {kv_info.worker}); "
            f"ttft {response.ttft_ms:.0f} ms, {response.tokens_generated} tokens in {response.total_ms:.0f} ms"
            + (f"; adapter {response.adapter}" if response.adapter else "")
        )
    )
    for ref in response.memories_used:
        out.print(escape(f"  used {ref.memory_id} v{ref.version}"))
    if response.remembered:
        out.print(escape(f"remembered as {', '.join(r.memory_id for r in response.remembered)}"))


def mcp(ctx: typer.Context) -> None:
    """Serve memos-ray's tools over MCP on stdin/stdout, against --url with --api-key: the command an MCP client
    (an agent framework, Claude Desktop, an IDE) starts. Over HTTP the same tools are at <url>/mcp."""
    from serve.mcp import build_mcp, stdio_client_for

    build_mcp(stdio_client_for(ctx.obj.url, ctx.obj.api_key or local_admin_key())).run("stdio")


def register(app: typer.Typer) -> None:
    """``chat`` is registered with the memory commands (``serve/cli/commands.py``), in the order a user meets them."""
    app.command(rich_help_panel=CONNECT)(mcp)
