"""One FastAPI router per concern; ``serve/app.py`` includes them all in one place."""

from __future__ import annotations

from serve.routes import (
    adapters,
    audit,
    bundles,
    changes,
    chat,
    cubes,
    identity,
    memories,
    openai,
    scheduler,
    search,
    system,
    ui,
)

ROUTERS = [
    system.router,
    cubes.router,
    memories.router,
    search.router,
    chat.router,
    openai.router,
    adapters.router,
    bundles.router,
    identity.router,
    audit.router,
    changes.router,
    scheduler.router,
    ui.router,
]

__all__ = ["ROUTERS"]
