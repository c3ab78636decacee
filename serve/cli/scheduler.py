"""MemScheduler commands: what it decided and why, a cube's usage, starting a session.

memos-ray decisions                      # the newest decisions (administrators), with reasons and figures
memos-ray decisions --cube team --kind promote
memos-ray usage team                     # most used memories, the working set
memos-ray session team ops               # warm the cubes' prefix and adapter before the first chat
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from memos_ray.types import DecisionKind, SchedulerStatus
from serve.cli.base import clip, connect, out


def decisions(
    ctx: typer.Context,
    cube: Annotated[str | None, typer.Option("--cube", "-c", help="one cube's decisions")] = None,
    kind: Annotated[DecisionKind | None, typer.Option("--kind", "-k")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 30,
) -> None:
    """The MemScheduler's newest decisions: what, why, and the figures it rested on."""
    with connect(ctx) as client:
        page = client.decisions(cube_id=cube, kind=kind, limit=limit)
    table = Table("seq", "at", "kind", "cube", "worker", "reason", "inputs")
    for d in page.decisions:
        inputs = ", ".join(f"{k}={v}" for k, v in d.inputs.items())
        table.add_row(
            str(d.seq),
            d.at.strftime("%H:%M:%S"),
            d.kind.value,
            escape(d.cube_id or "-"),
            "-" if d.worker is None else str(d.worker),
            escape(clip(d.reason, 70)),
            escape(clip(inputs, 60)),
        )
    out.print(table)


def usage(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="cube id")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """How a cube's memories are used (most used first) and its working set."""
    with connect(ctx) as client:
        u = client.cube_usage(cube, limit=limit)
    out.print(escape(f"{cube}: {u.chats} chats, working set of {len(u.working_set)} (churn {u.churn})"))
    table = Table("memory", "heat", "retrieved", "in prompt", "from cache", "last used", "agents", "working set")
    working = set(u.working_set)
    for m in u.memories:
        table.add_row(
            m.memory_id,
            f"{m.heat:.2f}",
            str(m.retrievals),
            str(m.prompt_uses),
            str(m.prefix_uses),
            m.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if m.last_used_at else "-",
            escape(clip(", ".join(m.agents), 30)),
            "*" if m.memory_id in working else "",
        )
    out.print(table)


def session(
    ctx: typer.Context,
    cubes: Annotated[list[str], typer.Argument(help="one or more cube ids", show_default=False)],
) -> None:
    """Start a session: the cubes' KV prefix and adapter are warmed on the worker that will serve them."""
    with connect(ctx) as client:
        s = client.open_session(cubes)
    out.print(escape(f"session {s.session_id} of {s.agent}"))
    table = Table("cube", "status", "tokens", "worker", "adapter", "reason")
    for w in s.warmed:
        table.add_row(
            escape(w.cube_id),
            w.status,
            str(w.tokens),
            "-" if w.worker is None else str(w.worker),
            escape(w.adapter or "-"),
            escape(clip(w.reason, 60)),
        )
    out.print(table)


def print_scheduler(status: SchedulerStatus) -> None:
    """``memos-ray status``'s part: what lives where, and the budgets used."""
    state = "on" if status.enabled else "off"
    out.print(
        escape(
            f"scheduler: policy {state}; break-even {status.break_even_tokens} tokens; "
            f"{status.cubes_with_working_sets} cubes with working sets; {status.decisions} decisions; "
            f"disk {status.disk_bytes / 2**20:.1f} of {status.disk_budget / 2**20:.0f} MiB; "
            f"builds ahead of need {status.build_s_window:.1f} of {status.build_s_budget:.0f} s a minute"
        )
    )
    workers = Table("worker", "KV in memory", "budget", "caches", "adapters", title="workers", title_justify="left")
    for w in status.workers:
        workers.add_row(
            str(w.worker),
            f"{w.kv_bytes / 2**20:.1f} MiB",
            f"{w.kv_budget / 2**20:.0f} MiB",
            str(w.resident),
            escape(clip(", ".join(w.adapters), 40) or "-"),
        )
    out.print(workers)
    caches = Table(
        "cache",
        "cubes",
        "tokens",
        "MiB",
        "workers",
        "last used",
        "in use",
        "for",
        title="KV caches",
        title_justify="left",
    )
    recent = sorted(status.caches, key=lambda c: c.last_used_at.timestamp() if c.last_used_at else 0.0, reverse=True)
    for c in recent[:30]:
        caches.add_row(
            c.key.rsplit("|", 1)[-1][:12],
            escape(clip(", ".join(c.cube_ids), 24) or "-"),
            str(c.tokens),
            f"{c.bytes / 2**20:.1f}",
            ", ".join(map(str, c.workers)) or "disk",
            c.last_used_at.strftime("%H:%M:%S") if c.last_used_at else "-",
            str(c.in_use),
            c.built_for,
        )
    out.print(caches)


PANEL = "MemScheduler"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``memos-ray`` app."""
    app.command(rich_help_panel=PANEL)(decisions)
    app.command(rich_help_panel=PANEL)(usage)
    app.command(rich_help_panel=PANEL)(session)
