"""Lifecycle commands: restore or archive a memory, purge one, and a cube's lifecycle policy.

memos-ray archive alice m1                       # out of default search, still readable
memos-ray restore alice m1                       # active again (archived, expired, merged or superseded)
memos-ray purge alice m1                         # erase it for good; prints every id erased
memos-ray lifecycle alice                        # the cube's policy
memos-ray lifecycle alice --ttl event=86400 --archive-after 2592000 --merge-threshold 0.95
memos-ray lifecycle alice --off                  # no expiry, archiving, merging or dedup
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from memos_ray.types import CubeMeta, LifecycleState
from serve.cli.base import connect, out

Cube = Annotated[str, typer.Argument(help="cube id")]
MemoryId = Annotated[str, typer.Argument(metavar="MEMORY_ID")]


def _set_state(ctx: typer.Context, cube: str, memory_id: str, state: LifecycleState) -> None:
    with connect(ctx) as client:
        item = client.restore(cube, memory_id) if state == LifecycleState.active else client.archive(cube, memory_id)
    verb = "restored" if state == LifecycleState.active else "archived"
    out.print(escape(f"{verb} {item.id} (version {item.version}) in {item.cube_id}: {item.state.value}"))


def restore(ctx: typer.Context, cube: Cube, memory_id: MemoryId) -> None:
    """Make an archived, expired, merged or superseded memory active again."""
    _set_state(ctx, cube, memory_id, LifecycleState.active)


def archive(ctx: typer.Context, cube: Cube, memory_id: MemoryId) -> None:
    """Archive a memory: out of default search, still readable and restorable."""
    _set_state(ctx, cube, memory_id, LifecycleState.archived)


def purge(ctx: typer.Context, cube: Cube, memory_id: MemoryId) -> None:
    """Erase a memory for good (admin role), with its near-duplicates and the memories made from it."""
    with connect(ctx) as client:
        purged = client.purge(cube, memory_id)
    out.print(escape(f"purged from {cube}: {', '.join(purged.memory_ids) or '-'}"))
    if purged.scrubbed:
        out.print(escape(f"context scrubbed in: {', '.join(purged.scrubbed)}"))


def _ttls(pairs: list[str]) -> dict[str, str]:
    """``KIND=SECONDS`` pairs; the values are checked by the SDK (pydantic) like any other input."""
    ttl: dict[str, str] = {}
    for pair in pairs:
        kind, sep, seconds = pair.partition("=")
        if not sep or not kind.strip() or not seconds.strip():
            raise typer.BadParameter(f"expected KIND=SECONDS, got {pair!r}", param_hint="--ttl")
        ttl[kind.strip()] = seconds.strip()
    return ttl


def _seconds(value: float) -> str:
    return f"{value:.12g} s"


def print_lifecycle(meta: CubeMeta) -> None:
    policy = meta.lifecycle
    if policy is None:
        out.print(escape(f"lifecycle of {meta.id}: the server's default (scheduler.lifecycle)"))
        return
    table = Table("setting", "value", title=f"lifecycle of {escape(meta.id)}", title_justify="left")
    for kind, seconds in sorted(policy.ttl_s.items()):
        table.add_row(escape(f"ttl {kind.value}"), _seconds(seconds))
    if not policy.ttl_s:
        table.add_row("ttl", "off")
    off = "off"
    table.add_row("archive after", off if policy.archive_after_s is None else _seconds(policy.archive_after_s))
    bar = policy.archive_below_salience
    table.add_row("archive below salience", off if bar is None else f"{bar:g}")
    table.add_row("merge threshold", off if policy.merge_threshold is None else f"{policy.merge_threshold:g}")
    table.add_row("dedup threshold", off if policy.dedup_threshold is None else f"{policy.dedup_threshold:g}")
    out.print(table)


def lifecycle(
    ctx: typer.Context,
    cube: Cube,
    ttl: Annotated[
        list[str] | None,
        typer.Option("--ttl", metavar="KIND=SECONDS", help="a kind's time to live since last written (repeatable)"),
    ] = None,
    archive_after: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="archive memories unused this long")
    ] = None,
    archive_below_salience: Annotated[
        float | None,
        typer.Option(min=0.0, help="archive only unused memories whose salience is below this"),
    ] = None,
    merge_threshold: Annotated[
        float | None, typer.Option(min=0.5, max=1.0, help="merge near-duplicates at least this similar")
    ] = None,
    dedup_threshold: Annotated[
        float | None, typer.Option(min=0.5, max=1.0, help="on ingest, keep one of memories at least this similar")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="turn every lifecycle rule off for this cube")] = False,
) -> None:
    """Show a cube's lifecycle policy; with options, replace it whole (admin role) and show the new one."""
    ttls = _ttls(ttl or [])
    policy = {
        k: v
        for k, v in {
            "ttl_s": ttls or None,
            "archive_after_s": archive_after,
            "archive_below_salience": archive_below_salience,
            "merge_threshold": merge_threshold,
            "dedup_threshold": dedup_threshold,
        }.items()
        if v is not None
    }
    if off and policy:
        raise typer.BadParameter("--off takes no other policy option", param_hint="--off")
    with connect(ctx) as client:
        meta = client.update_cube(cube, lifecycle=policy) if (policy or off) else client.get_cube(cube)
    print_lifecycle(meta)


PANEL = "Lifecycle"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``memos-ray`` app."""
    app.command(rich_help_panel=PANEL)(restore)
    app.command(rich_help_panel=PANEL)(archive)
    app.command(rich_help_panel=PANEL)(purge)
    app.command(rich_help_panel=PANEL)(lifecycle)
