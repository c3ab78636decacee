"""Governance commands: who am I, principals, API keys, sharing, the audit log, and a change feed.

memos-ray principals create alice                      # administrators
memos-ray principals create alice-bot --kind agent --parent alice
memos-ray keys issue alice-bot --label laptop          # prints the key once
memos-ray keys revoke 3f2a9c1b7d4e
memos-ray share team-notes alice-bot --role write
memos-ray audit team-notes --action memory. --limit 20
memos-ray watch team-notes                             # one line per change, until Ctrl-C
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from memos_ray.types import PrincipalKind, Role
from serve.cli.base import clip, connect, out


def whoami(ctx: typer.Context) -> None:
    """The principal of the API key in use."""
    with connect(ctx) as client:
        me = client.whoami()
    admin = " (administrator)" if me.admin else ""
    out.print(
        escape(f"{me.principal} [{me.kind}]{admin} via key {me.key_id}; grants may name: {', '.join(me.subjects)}")
    )


def principals_list(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is not None:
        return
    with connect(ctx) as client:
        principals = client.list_principals()
    table = Table("id", "kind", "parent", "teams", "admin", "disabled")
    for p in principals:
        table.add_row(
            p.id, p.kind, p.parent or "", ", ".join(p.teams), "yes" if p.admin else "", "yes" if p.disabled else ""
        )
    out.print(table)


def principals_create(
    ctx: typer.Context,
    principal_id: Annotated[str, typer.Argument(metavar="ID")],
    kind: Annotated[PrincipalKind, typer.Option("--kind", "-k")] = PrincipalKind.user,
    parent: Annotated[str | None, typer.Option(help="an agent's user or team")] = None,
    team: Annotated[list[str] | None, typer.Option("--team", help="member of this team (repeatable)")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="a system administrator")] = False,
) -> None:
    """Create a user, team or agent."""
    with connect(ctx) as client:
        p = client.create_principal(principal_id, kind, parent=parent, teams=team, admin=admin or None)
    out.print(escape(f"created {p.kind} {p.id}"))


def _set_disabled(ctx: typer.Context, principal_id: str, disabled: bool) -> None:
    with connect(ctx) as client:
        p = client.update_principal(principal_id, disabled=disabled)
    out.print(escape(f"{p.id} {'disabled' if p.disabled else 'enabled'}"))


def principals_disable(ctx: typer.Context, principal_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Disable a principal: its keys (and its agents' keys) stop working at once."""
    _set_disabled(ctx, principal_id, True)


def principals_enable(ctx: typer.Context, principal_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    _set_disabled(ctx, principal_id, False)


def keys_list(
    ctx: typer.Context, principal: Annotated[str | None, typer.Option(help="only this principal's keys")] = None
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    with connect(ctx) as client:
        keys = client.list_keys(principal)
    table = Table("key id", "principal", "label", "created", "expires", "revoked")
    for k in keys:
        when = [t.isoformat(timespec="seconds") if t else "" for t in (k.created_at, k.expires_at, k.revoked_at)]
        table.add_row(k.key_id, k.principal, escape(k.label), *when)
    out.print(table)


def keys_issue(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="a user or agent")],
    label: Annotated[str, typer.Option(help="what the key is for")] = "",
) -> None:
    """Issue a key; it is printed this once (stdout, alone on the last line)."""
    with connect(ctx) as client:
        issued = client.issue_key(principal, label=label)
    typer.echo(f"key {issued.info.key_id} for {principal} (shown once):", err=True)
    typer.echo(issued.key)


def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(metavar="KEY_ID")]) -> None:
    """Revoke a key: refused from the next request on."""
    with connect(ctx) as client:
        info = client.revoke_key(key_id)
    out.print(escape(f"revoked key {info.key_id} of {info.principal}"))


def share(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="cube id")],
    principal: Annotated[str, typer.Argument(help="a user, agent or team")],
    role: Annotated[Role, typer.Option("--role", "-r")] = Role.read,
) -> None:
    """Grant a role on a cube (replaces the principal's earlier grant)."""
    with connect(ctx) as client:
        client.share(cube, principal, role)
    out.print(escape(f"{principal} may now {role.value} cube {cube}"))


def unshare(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="cube id")],
    principal: Annotated[str, typer.Argument(help="a user, agent or team")],
) -> None:
    """Revoke a principal's grant on a cube."""
    with connect(ctx) as client:
        client.unshare(cube, principal)
    out.print(escape(f"revoked {principal}'s access to cube {cube}"))


def audit(
    ctx: typer.Context,
    cube: Annotated[str | None, typer.Argument(help="a cube (its admins); none: everything (administrators)")] = None,
    action: Annotated[str | None, typer.Option(help="an action, or a prefix ending in '.' (memory.)")] = None,
    principal: Annotated[str | None, typer.Option()] = None,
    denied: Annotated[bool, typer.Option("--denied", help="only denied accesses")] = False,
    after_seq: Annotated[int, typer.Option(min=0)] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Query the audit log."""
    with connect(ctx) as client:
        page = client.audit(
            cube,
            action=action,
            principal=principal,
            result="denied" if denied else None,
            after_seq=after_seq,
            limit=limit,
        )
    table = Table("seq", "at", "principal", "action", "result", "cube", "memory", "details")
    for r in page.records:
        table.add_row(
            str(r.seq),
            r.at.isoformat(timespec="seconds"),
            r.principal or "-",
            r.action,
            f"{r.result} {r.status}",
            r.cube_id or "",
            r.memory_id or "",
            escape(clip(str(r.details), 60)),
        )
    out.print(table)
    if page.next_after_seq is not None:
        out.print(f"more: --after-seq {page.next_after_seq}")


def watch(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="cube id")],
    after_seq: Annotated[int | None, typer.Option(help="replay the changes after this seq first")] = None,
) -> None:
    """Follow a cube's changes as they happen (Ctrl-C to stop)."""
    with connect(ctx) as client:
        try:
            for event in client.watch(cube, after_seq):
                text = clip(event.memory.text) if event.memory else ""
                out.print(
                    escape(
                        f"{event.seq} {event.op} {event.memory_id} v{event.version or '-'} by {event.author}: {text}"
                    )
                )
        except KeyboardInterrupt:
            pass


PANEL = "Sharing and audit"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``memos-ray`` app."""
    principals_app = typer.Typer(help="Users, agents and teams: list (no subcommand), create, disable, enable.")
    app.add_typer(principals_app, name="principals", rich_help_panel=PANEL)
    keys_app = typer.Typer(help="API keys: list (no subcommand), issue, revoke.")
    app.add_typer(keys_app, name="keys", rich_help_panel=PANEL)
    app.command(rich_help_panel="Start")(whoami)
    principals_app.callback(invoke_without_command=True)(principals_list)
    principals_app.command("create")(principals_create)
    principals_app.command("disable")(principals_disable)
    principals_app.command("enable")(principals_enable)
    keys_app.callback(invoke_without_command=True)(keys_list)
    keys_app.command("issue")(keys_issue)
    keys_app.command("revoke")(keys_revoke)
    app.command(rich_help_panel=PANEL)(share)
    app.command(rich_help_panel=PANEL)(unshare)
    app.command(rich_help_panel=PANEL)(audit)
    app.command(rich_help_panel="Memories")(watch)
