"""Parametric memory commands: train a cube's LoRA adapter (with a progress bar), list and choose adapters.

memos-ray train alice --rank 8 --steps 40            # waits, showing step, loss and percent
memos-ray train alice --no-wait                      # prints the job id and returns
memos-ray adapters alice                             # versions, metrics, stale marks, the active one
memos-ray adapters alice --activate ad-3f2a9c1b7d4e  # or --base to chat without one
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from memos_ray.types import AdapterEvaluation, AdapterSettings
from serve.cli.base import connect, err, out

_DEFAULT = AdapterSettings()


def train(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="cube id")],
    rank: Annotated[int, typer.Option(min=1, max=64)] = _DEFAULT.rank,
    alpha: Annotated[float, typer.Option(min=0.001)] = _DEFAULT.alpha,
    steps: Annotated[int, typer.Option(min=1, max=5000)] = _DEFAULT.steps,
    learning_rate: Annotated[float, typer.Option("--lr", min=1e-7, max=1.0)] = _DEFAULT.learning_rate,
    target: Annotated[list[str] | None, typer.Option("--target", help="target module (repeatable)")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="only memories with this tag (repeatable)")
    ] = None,
    all_kinds: Annotated[bool, typer.Option("--all-kinds", help="every kind of memory, not only facts")] = False,
    wait: Annotated[bool, typer.Option(help="follow the job with a progress bar")] = True,
    exam: Annotated[
        bool, typer.Option(help="examine it on questions it was not trained on; active only if passed")
    ] = True,
) -> None:
    """Train a LoRA adapter from a cube's memories (off the request path); it becomes the active one when it
    passes its exam (questions it was not trained on, against the base model)."""
    settings = AdapterSettings(
        rank=rank,
        alpha=alpha,
        steps=steps,
        learning_rate=learning_rate,
        examine=exam,
        **({"target_modules": target} if target else {}),
    )
    with connect(ctx) as client:
        job = client.train_adapter(cube, settings=settings, tags_any=tag, kinds=[] if all_kinds else None)
        out.print(escape(f"job {job.id}: training on {job.memories} memories of {cube}"))
        if not wait:
            return
        columns = (
            TextColumn("training"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err) as progress:
            bar = progress.add_task("train", total=job.steps, loss="")
            while job.state in ("queued", "running"):
                time.sleep(0.5)
                job = client.training_job(job.id)
                loss = "" if job.loss is None else f"loss {job.loss:.3f}"
                progress.update(bar, completed=job.step, loss=loss)
    if job.state == "failed":
        typer.echo(f"error: training failed: {job.error}", err=True)
        raise typer.Exit(1)
    out.print(escape(f"adapter {job.adapter_id} is ready for {cube}"))
    if job.evaluation is not None:
        verdict = "passed: active" if job.evaluation.passed else "failed: kept, not made active"
        out.print(escape(f"exam: {job.evaluation.reason} ({verdict})"))


def adapters(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="cube id")],
    activate: Annotated[str | None, typer.Option(help="make this adapter the active one")] = None,
    base: Annotated[bool, typer.Option("--base", help="chat with the base model (no adapter)")] = False,
) -> None:
    """A cube's adapters (versions, metrics, stale marks); --activate ID or --base chooses the active one."""
    with connect(ctx) as client:
        listing = client.activate_adapter(cube, None if base else activate) if (activate or base) else None
        listing = listing or client.adapters(cube)
    table = Table(
        "id",
        "v",
        "active",
        "rank",
        "steps",
        "memories",
        "exam (base)",
        "NLL before → after",
        "tok/s",
        "stale",
        "created",
    )
    for a in listing.adapters:
        m = a.metrics
        table.add_row(
            a.id,
            str(a.version),
            "*" if a.id == listing.active else "",
            str(a.settings.rank),
            str(m.steps),
            str(len(a.sources)),
            _exam(a.evaluation),
            f"{m.nll_before:.2f} → {m.nll_after:.2f}",
            f"{m.tokens_per_s:.0f}",
            escape(a.stale_reason or "yes") if a.stale else "",
            a.created_at.isoformat(timespec="seconds"),
        )
    out.print(table)


def _exam(e: AdapterEvaluation | None) -> str:
    if e is None:
        return "-"
    return f"{e.answered}/{e.questions} ({e.base_answered}) {'pass' if e.passed else 'fail'}"


PANEL = "Parametric memory"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``memos-ray`` app."""
    app.command(rich_help_panel=PANEL)(train)
    app.command(rich_help_panel=PANEL)(adapters)
