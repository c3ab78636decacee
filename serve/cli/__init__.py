"""The ``memos-ray`` command line: ``up`` starts a server, the other commands talk to one through the SDK."""

from __future__ import annotations

from serve.cli.commands import app, main

__all__ = ["app", "main"]
