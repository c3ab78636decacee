"""Portable MemCube bundles: move a cube between servers as one signed file.

memos-ray export alice -o alice.memcube          # every version of every memory, adapters, KV metadata
memos-ray import-bundle alice-copy alice.memcube  # into an existing cube (write role); verified first
memos-ray bundle-key                              # this server's signing key, to trust it elsewhere
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from serve.cli.base import connect, out
from serve.cli.chat import CONNECT


def export(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="cube id")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file to write [default: <cube>.memcube]", dir_okay=False)
    ] = None,
) -> None:
    """Export a cube as one bundle file signed with the server's key: every version of every memory with its
    provenance, its adapters (with their base model) and its KV cache metadata."""
    path = output or Path(f"{cube}.memcube")
    with connect(ctx) as client:
        data = client.export_cube(cube)
    path.write_bytes(data)
    out.print(escape(f"exported {cube} to {path} ({len(data)} bytes)"))


def import_bundle(
    ctx: typer.Context,
    cube: Annotated[str, typer.Argument(help="target cube id (it must exist; create it with `cubes create`)")],
    file: Annotated[Path, typer.Argument(help="bundle file (.memcube)", exists=True, dir_okay=False, readable=True)],
) -> None:
    """Import a bundle file into an existing cube: its signature and every hash are checked before anything is
    written; memories get new ids and keep their versions and provenance. Not `import`: that reads chats."""
    with connect(ctx) as client:
        done = client.import_bundle(cube, file.read_bytes())
    out.print(
        escape(
            f"imported {done.memories} memories ({done.versions} versions) into {cube} from {done.from_cube} at "
            f"{done.exported_from}, exported by {done.exported_by}, signed by key {done.signer_key_id}"
        )
    )
    for a in done.adapters:
        state = "active" if a.active else f"inactive: {a.reason}"
        out.print(escape(f"  adapter {a.from_id} -> {a.id} v{a.version} ({state})"))
    notes = [
        f"{done.dropped_refs} references to memories outside the bundle dropped" if done.dropped_refs else "",
        f"{done.redacted} versions masked by redaction" if done.redacted else "",
        f"{done.kv_caches} KV caches described: rebuilt here on use" if done.kv_caches else "",
    ]
    for note in filter(None, notes):
        out.print(escape(f"  {note}"))


def bundle_key(ctx: typer.Context) -> None:
    """The public key this server signs bundles with, and its key id (for governance.bundle_trusted_keys)."""
    with connect(ctx) as client:
        key = client.bundle_key()
    out.print(escape(f"key id {key.key_id}\npublic key {key.public_key}"))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``memos-ray`` app."""
    app.command(rich_help_panel=CONNECT)(export)
    app.command("import-bundle", rich_help_panel=CONNECT)(import_bundle)
    app.command("bundle-key", rich_help_panel=CONNECT)(bundle_key)
