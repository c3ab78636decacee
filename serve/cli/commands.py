"""The ``memos-ray`` command line: start a server (``up``) and talk to one through the SDK (:mod:`memos_ray.client`).

    memos-ray up --port 8000                     # Ray + Serve + the app, until Ctrl-C
    memos-ray cubes create alice --name Alice
    memos-ray add alice "Alice moved to Lisbon" --tag home --speaker Alice
    memos-ray add alice "Alice moved to Porto" --supersedes m1 --valid-from 2024-03-01
    memos-ray import alice chat.jsonl --conversation-id c1
    memos-ray search alice bob "where does Alice live?" --top-k 5
    memos-ray search alice "where does Alice live?" --as-of 2023-06-01   # what held then

Client commands take ``--url`` (env ``MEMOS_RAY_URL``). An API error prints
``error <status> <code>: <message>`` and exits 1; a bad import file exits 2.
"""

from __future__ import annotations

import json
import signal
import threading
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from memos_ray.config import MemosConfig
from memos_ray.errors import MemosError
from memos_ray.plaintext.reader import context_of
from memos_ray.types import MAX_BATCH, ChatMessage, MemoryKind, SchedulerStatus
from serve.cli import adapters, bundles, chat, governance, lifecycle, scheduler
from serve.cli.base import app, clip, connect, err, iso_datetime, out


class SearchMode(StrEnum):
    hybrid = "hybrid"
    dense = "dense"
    bm25 = "bm25"


class BadFile(Exception):
    """An import file that cannot be read as messages."""


# ---------------------------------------------------------------- server

START = "Start"


def _up_config(
    host: str | None, port: int | None, data_dir: Path | None, max_live_cubes: int | None, model: str | None = None
) -> MemosConfig:
    """``MemosConfig.from_env()`` with the given options on top (validated again)."""
    data = MemosConfig.from_env().model_dump()
    if model is not None:
        data["llm"]["model"] = model
    data["serve"].update({k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    if data_dir is not None:
        data["storage"]["data_dir"] = data_dir
    if max_live_cubes is not None:
        data["directory"]["max_live_cubes"] = max_live_cubes
    return MemosConfig.model_validate(data)


def up(
    host: Annotated[str | None, typer.Option(help="bind address [env MEMOS_RAY_HOST; 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port [env MEMOS_RAY_PORT; 8000]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data root [env MEMOS_RAY_DATA_DIR]")] = None,
    max_live_cubes: Annotated[int | None, typer.Option(min=1, help="cube actors kept alive")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: start a local head)")] = None,
    metrics_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Prometheus metrics of this node (Ray's metrics agent)")
    ] = 8080,
    model: Annotated[
        str | None,
        typer.Option(help="the LLM: a Hugging Face folder or a .gguf file [env MEMOS_RAY_MODEL; packaged SmolLM2]"),
    ] = None,
) -> None:
    """Start Ray (or join --address), deploy the app on Ray Serve, and serve until Ctrl-C / SIGTERM."""
    try:
        config = _up_config(host, port, data_dir, max_live_cubes, model)
    except ValueError as exc:  # pydantic's ValidationError, or a non-integer MEMOS_RAY_PORT
        typer.echo(f"error: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None

    import ray  # heavy imports only for the server
    from ray import serve as ray_serve

    from actors.runtime import shutdown_runtime
    from serve.app import start

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C / SIGTERM aborts the clean shutdown

    if address is None:
        ray.init(num_cpus=None, include_dashboard=False, _metrics_export_port=metrics_port)
    else:
        ray.init(address=address)
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which sets its own SIGTERM handler
        signal.signal(sig, _on_signal)
    try:
        url = start(config)
        out.print(f"memos-ray serving at [bold]{url}[/]")
        out.print(f"  web UI    {url}/ui")
        out.print(f"  API docs  {url}/docs")
        out.print(f"  OpenAI    base_url {url}/v1, model memos-ray/<cube>  (for clients, with a key)")
        out.print(f"  MCP       {url}/mcp  (for MCP clients, with a key; or `memos-ray mcp` over stdio)")
        if address is None:  # a joined cluster's nodes export theirs where `ray start --metrics-export-port` said
            out.print(f"  metrics   http://{config.serve.host}:{metrics_port}/metrics  (Prometheus; ray_memos_*)")
        out.print(escape(f"data in {config.storage.data_dir}; Ctrl-C to stop"))
        key_file = config.storage.data_dir / "admin.key"
        if key_file.exists():
            out.print(
                escape(f"administrator API key in {key_file} (local commands use it; MEMOS_RAY_API_KEY to override)")
            )
        while not stop.wait(0.5):
            pass
    finally:
        out.print("shutting down: Serve, then cubes (flushing storage), then Ray")
        # Serve first, so no request reaches a cube after it has been flushed and stopped.
        for step in (ray_serve.shutdown, lambda: shutdown_runtime(config), ray.shutdown):
            try:
                step()
            except Exception as exc:  # any failure: keep shutting the rest down
                typer.echo(f"warning: shutdown step failed: {type(exc).__name__}: {exc}", err=True)


# ---------------------------------------------------------------- client commands


def status(ctx: typer.Context) -> None:
    """Server health, Directory and Embedder statistics, and what the MemScheduler keeps where."""
    with connect(ctx) as client:
        health, stats = client.health(), client.status()
    out.print(escape(f"{ctx.obj.url}: {health.get('status')} (version {health.get('version')})"))
    for section in ("directory", "embedder"):
        table = Table("stat", "value", title=section, title_justify="left")
        for key, value in (stats.get(section) or {}).items():
            table.add_row(escape(key), "-" if value is None else escape(str(value)))
        out.print(table)
    if stats.get("scheduler"):
        scheduler.print_scheduler(SchedulerStatus.model_validate(stats["scheduler"]))
    else:
        out.print("scheduler: no model workers yet (the first chat or session starts them)")


def add(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="cube id")],
    text: Annotated[str, typer.Argument(help="the memory's text")],
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="a tag (repeatable)")] = None,
    kind: Annotated[MemoryKind, typer.Option("--kind", "-k")] = MemoryKind.fact,
    speaker: Annotated[str | None, typer.Option("--speaker", "-s", help="who said it")] = None,
    supersedes: Annotated[
        list[str] | None,
        typer.Option("--supersedes", metavar="ID", help="a memory of the cube this one replaces (repeatable)"),
    ] = None,
    valid_from: Annotated[
        datetime | None, typer.Option(parser=iso_datetime, metavar="ISO", help="since when the fact holds")
    ] = None,
    valid_to: Annotated[
        datetime | None, typer.Option(parser=iso_datetime, metavar="ISO", help="until when it held")
    ] = None,
) -> None:
    """Add one memory to a cube."""
    source = None if speaker is None else {"speaker": speaker}
    with connect(ctx) as client:
        item = client.add(
            cube,
            text,
            kind=kind,
            tags=tag or None,
            source=source,
            valid_from=valid_from,
            valid_to=valid_to,
            supersedes=supersedes or None,
        )
    out.print(escape(f"added {item.id} (version {item.version}) to {item.cube_id}"))


def search(
    ctx: typer.Context,
    cubes: Annotated[list[str], typer.Argument(help="one or more cube ids", show_default=False)],
    query: Annotated[str, typer.Argument(help="the query (last argument)")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=200)] = 10,
    mode: Annotated[SearchMode, typer.Option("--mode", "-m")] = SearchMode.hybrid,
    as_of: Annotated[
        datetime | None,
        typer.Option(parser=iso_datetime, metavar="ISO", help="the facts valid then (superseded ones included)"),
    ] = None,
) -> None:
    """Search one or more cubes: CUBE... QUERY."""
    target: str | list[str] = cubes[0] if len(cubes) == 1 else cubes
    search_filter = None if as_of is None else {"as_of": as_of}
    with connect(ctx) as client:
        res = client.search(target, query, top_k=top_k, mode=mode.value, filter=search_filter)
    table = Table("score", "id", "v", *(["cube"] if len(cubes) > 1 else []), "speaker", "text")
    for hit in res.hits:
        m = hit.memory
        cube_col = [m.cube_id] if len(cubes) > 1 else []
        table.add_row(
            f"{hit.score:.4f}",
            m.id,
            str(m.version),
            *cube_col,
            escape(m.provenance.speaker or ""),
            escape(clip(m.text)),
        )
    out.print(table)
    out.print(f"{len(res.hits)} hits in {res.took_ms:.1f} ms")


def cubes_list(
    ctx: typer.Context,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """List cubes; or `cubes create ID` / `cubes delete ID`."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(ctx) as client:
        page = client.list_cubes(offset, limit)
    table = Table("id", "name", "memories", "text bytes", "updated")
    for c in page.cubes:
        table.add_row(
            c.id, escape(c.name), str(c.memory_count), str(c.text_bytes), c.updated_at.isoformat(timespec="seconds")
        )
    out.print(table)
    out.print(f"{len(page.cubes)} of {page.total} cubes")


def cubes_create(
    ctx: typer.Context,
    cube_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="cube id (generated when absent)")] = None,
    name: Annotated[str, typer.Option(help="display name")] = "",
    description: Annotated[str, typer.Option(help="free text")] = "",
) -> None:
    """Create a cube."""
    with connect(ctx) as client:
        cube = client.create_cube(cube_id, name=name, description=description)
    out.print(escape(f"created cube {cube.id}"))


def cubes_delete(ctx: typer.Context, cube_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Delete a cube and all its memories."""
    with connect(ctx) as client:
        client.delete_cube(cube_id)
    out.print(escape(f"deleted cube {cube_id}"))


# ---------------------------------------------------------------- import


def read_conversation(path: Path) -> list[ChatMessage]:
    """Messages from a JSON list, a JSON object ``{"messages": [...]}``, or JSONL; raises :class:`BadFile`."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadFile(f"cannot read: {exc}") from None
    if not raw.strip():
        raise BadFile("the file is empty")
    lines: list[int | None]
    try:
        data: Any = json.loads(raw)
        if isinstance(data, dict) and "messages" in data:
            data = data["messages"]
        elif isinstance(data, dict):  # a one-line JSONL file
            data = [data]
        if not isinstance(data, list):
            raise BadFile('expected a list of messages, {"messages": [...]}, or one JSON message per line')
        lines = [None] * len(data)
    except json.JSONDecodeError as whole:
        data, lines = [], []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if not data:  # not JSONL either: report the document's own error
                    raise BadFile(f"not valid JSON: {whole.msg} (line {whole.lineno}, column {whole.colno})") from None
                raise BadFile(f"line {n}: not valid JSON ({exc.msg})") from None
            lines.append(n)
    if not data:
        raise BadFile("no messages in the file")
    messages = []
    for i, (obj, line_no) in enumerate(zip(data, lines, strict=True), 1):
        try:
            messages.append(ChatMessage.model_validate(obj))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()[:3])
            where = f"message {i}" + ("" if line_no is None else f" (line {line_no})")
            raise BadFile(f"{where}: {problems}") from None
    return messages


def import_(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="cube id")],
    file: Annotated[Path, typer.Argument(help="JSON list, {'messages': [...]}, or JSONL of {role, content, ...}")],
    batch_size: Annotated[int, typer.Option(min=1, max=MAX_BATCH, help="messages per request")] = 64,
    conversation_id: Annotated[str | None, typer.Option(help="recorded on every memory")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="a tag for every memory (repeatable)")] = None,
) -> None:
    """Import a conversation file through the MemReader (messages -> memories), in batches."""
    try:
        messages = read_conversation(file)
    except BadFile as exc:
        typer.echo(f"error: {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    created = held = sent = 0
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TextColumn("messages"), TimeElapsedColumn())
    with connect(ctx) as client, Progress(*columns, console=err) as progress:
        bar = progress.add_task("import", total=len(messages))
        try:
            for start in range(0, len(messages), batch_size):
                batch = messages[start : start + batch_size]
                context = context_of(messages[start - 1]) if start else None
                res = client.add_messages(
                    cube, batch, conversation_id=conversation_id, tags=tag or None, context=context
                )
                created += len(res.items) - len(res.duplicates)
                held += len(res.duplicates)
                sent += len(batch)
                progress.advance(bar, len(batch))
        except (MemosError, httpx.HTTPError):
            progress.stop()
            typer.echo(f"stopped after {sent} of {len(messages)} messages ({created} memories created)", err=True)
            raise
    already = f" ({held} already held)" if held else ""
    out.print(escape(f"imported {len(messages)} messages into {cube}: {created} memories created{already}"))


def main() -> None:
    app()  # pragma: no cover


if __name__ == "__main__":
    main()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``memos-ray`` app."""
    cubes_app = typer.Typer(help="List cubes (no subcommand), or create / delete one.")
    app.command(rich_help_panel=START)(up)
    app.command(rich_help_panel=START)(status)
    app.add_typer(cubes_app, name="cubes", rich_help_panel=chat.CHAT)
    app.command(rich_help_panel=chat.CHAT)(add)
    app.command(rich_help_panel=chat.CHAT)(search)
    app.command(rich_help_panel=chat.CHAT)(chat.chat)
    cubes_app.callback(invoke_without_command=True)(cubes_list)
    cubes_app.command("create")(cubes_create)
    cubes_app.command("delete")(cubes_delete)
    app.command("import", rich_help_panel=chat.CHAT)(import_)


register(app)
chat.register(app)
governance.register(app)
lifecycle.register(app)
adapters.register(app)
scheduler.register(app)
bundles.register(app)
