"""The web UI: one page (``/ui``) and its static files (``/ui/static/{name}``), from ``serve/ui/static``.

No key is needed for these files: the page holds no data. It asks for a key, keeps it in the tab's
``sessionStorage`` and calls the ``/v1`` routes with it, like any client. Only the files directly in
the folder, with a known type, are served; any other name is a 404.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.(?:html|js|css)$")
_HEADERS = {
    "Cache-Control": "no-cache",  # the files are small; a new version is seen at once
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The page loads nothing but its own files and talks to nothing but this service.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(tags=["ui"], include_in_schema=False)


def _file(name: str) -> Path:
    """The file ``name`` directly in the static folder, or 404 (another folder, a hidden file, an odd type)."""
    if not _NAME.fullmatch(name):
        raise HTTPException(status_code=404, detail=f"no UI file named {name!r}")
    path = (STATIC / name).resolve()
    if path.parent != STATIC or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no UI file named {name!r}")
    return path


def _serve(name: str) -> Response:
    path = _file(name)
    headers = dict(_HEADERS)
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = _CSP
    return Response(path.read_bytes(), media_type=TYPES[path.suffix], headers=headers)


@router.get("/")
async def root() -> RedirectResponse:
    """A browser pointed at the server's address lands on the UI."""
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
@router.get("/ui/")
async def index() -> Response:
    """The single page; its views are hash routes (``/ui#/cubes``)."""
    return _serve("index.html")


@router.get("/ui/static/{name}")
async def static_file(name: str) -> Response:
    return _serve(name)


__all__ = ["STATIC", "router"]
