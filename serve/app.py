"""The HTTP interface: a Ray Serve deployment over a FastAPI app (``/v1``, OpenAPI at ``/docs``).

The app is built in one place (:func:`create_app`): one router per concern (``serve/routes``), the
error handlers, the middleware, and the replica's :class:`serve.services.Services`, which routes reach
through a dependency. Each replica builds its own app when it starts (Serve's late-bound ingress), so
there is no module-global app and no handle held twice. The ingress holds no memory state itself, so
replicas scale freely.

    serve run serve.app:build_app          # or a Serve config, see clusters/serve_config.yaml
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Application

from actors.runtime import ensure_runtime, ensure_scheduler
from memos_ray import __version__
from memos_ray.config import MemosConfig
from serve.auth import audit_failure
from serve.errors import ERROR_RESPONSES, install
from serve.mcp import build_mcp, http_client_for
from serve.middleware import MCP_PATH, install_middleware
from serve.routes import ROUTERS
from serve.services import Services


def _self_url(config: MemosConfig) -> str:
    host = "127.0.0.1" if config.serve.host in ("0.0.0.0", "::") else config.serve.host
    return f"http://{host}:{config.serve.port}"


def create_app(services: Services) -> FastAPI:
    mcp = build_mcp(http_client_for(_self_url(services.config)))
    # stateless: any replica answers any MCP request (no session to pin); the key, not the Host, is the guard
    mcp_http = mcp.streamable_http_app(streamable_http_path=MCP_PATH, stateless_http=True, json_response=True, host="")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    api = FastAPI(
        lifespan=lifespan,
        title="memos-ray",
        version=__version__,
        description="A memory operating system for LLM agents: MemCube actors on Ray, served by Ray Serve. "
        "Every route except /v1/health (and these pages) needs an API key: 'Authorization: Bearer <key>'. "
        "Every mutating route takes an Idempotency-Key header: a retry with the same key gets the first answer. "
        "OpenAI clients: base_url <this server>/v1, model memos-ray/<cube_id>. MCP: <this server>/mcp.",
        responses=ERROR_RESPONSES,
    )
    for router in ROUTERS:
        api.include_router(router)
    api.router.routes.extend(mcp_http.routes)  # POST /mcp: the MCP server over streamable HTTP (serve/mcp.py)
    respond = install(api, on_error=audit_failure)
    install_middleware(api, respond)
    api.state.services = services
    return api


@serve.deployment(name="memos_ingress")
@serve.ingress()
class MemosIngress:
    """A Serve replica: it builds its app, with its own :class:`Services`, when it starts."""

    def __init__(self, config: MemosConfig) -> None:
        self.config = config

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(Services.start(self.config))


class AppArgs(BaseModel):
    """Arguments of ``build_app``: a full config, or none for the environment's defaults."""

    model_config = ConfigDict(extra="forbid")
    config: MemosConfig | None = None


def build_app(args: dict[str, Any] | None = None) -> Application:
    parsed = AppArgs.model_validate(args or {})
    config = parsed.config or MemosConfig.from_env()
    return MemosIngress.options(  # type: ignore[attr-defined]
        num_replicas=config.serve.num_replicas,
        max_ongoing_requests=config.serve.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.serve.replica_num_cpus},
    ).bind(config)


def start(config: MemosConfig) -> str:
    """Start the shared actors and Serve on ``config.serve``, deploy the app; returns the base URL.

    The API answers once the stores and the embedder are up (seconds). The Scheduler and its model workers
    (loading the LLM and measuring its prefill: 17-39 s here) start in the background after it: nothing but
    a chat needs them, and a chat that comes first waits for them."""
    ensure_runtime(config)  # from the driver: the embedder loads before the first request waits on it
    serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
    serve.run(build_app({"config": config.model_dump(mode="json")}), name="memos", route_prefix="/")
    ensure_scheduler(config, wait=False)
    return f"http://{config.serve.host}:{config.serve.port}"
