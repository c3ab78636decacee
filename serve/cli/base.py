"""What every ``memos-ray`` command shares: the Typer app, the consoles, and the client on ``--url``.

The API key comes from ``--api-key`` (env ``MEMOS_RAY_API_KEY``); without one, a local operator's
commands use the bootstrap administrator key that ``memos-ray up`` wrote to ``<data_dir>/admin.key``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console

from memos_ray.client.clients import DEFAULT_URL, MemosClient
from memos_ray.config import MemosConfig
from memos_ray.errors import MemosError

app = typer.Typer(
    name="memos-ray",
    help="memos-ray: a memory OS for LLM agents on Ray. `up` starts a server; the other commands talk to one.",
    no_args_is_help=True,
    add_completion=False,
)

out = Console()
err = Console(stderr=True)


@dataclass(frozen=True)
class Target:
    url: str
    timeout: float
    api_key: str | None


def local_admin_key() -> str | None:
    """The key ``memos-ray up`` generated for the administrator, if this machine's data dir has one."""
    path = MemosConfig.from_env().storage.data_dir / "admin.key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _root(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="MEMOS_RAY_URL", help="server base URL (client commands)")] = DEFAULT_URL,
    timeout: Annotated[float, typer.Option(min=0.1, help="request timeout, seconds")] = 60.0,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="MEMOS_RAY_API_KEY", help="API key [default: <data_dir>/admin.key when present]"),
    ] = None,
) -> None:
    ctx.obj = Target(url=url, timeout=timeout, api_key=api_key)


app.callback()(_root)


@contextmanager
def connect(ctx: typer.Context) -> Iterator[MemosClient]:
    """A client on ``--url``; API and connection errors become a one-line message and exit 1."""
    target: Target = ctx.obj
    try:
        key = target.api_key or local_admin_key()
        with MemosClient(target.url, timeout=target.timeout, api_key=key) as client:
            yield client
    except MemosError as exc:
        typer.echo(f"error {exc.status_code} {exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        typer.echo(f"error: {target.url}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    except ValidationError as exc:  # the SDK validates arguments before sending them
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()[:5])
        typer.echo(f"error: invalid input: {problems}", err=True)
        raise typer.Exit(2) from None


def clip(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def iso_datetime(value: str) -> datetime:
    """An option's ISO 8601 time (``2024-05-01``, ``2024-05-01T10:00:00+02:00``, ``...Z``); naive is UTC on the
    server. A ValueError makes click report a bad parameter (exit 2)."""
    return datetime.fromisoformat(value)
