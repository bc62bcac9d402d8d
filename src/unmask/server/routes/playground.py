"""``GET /`` (and ``HEAD /``): the playground, one static page
(``unmask/server/static/playground.html``) that calls the same API as any client."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from unmask.server.state import ServerState


def router(state: ServerState) -> APIRouter:
    r = APIRouter()

    @r.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: `curl -I`
    async def playground() -> HTMLResponse:
        page = resources.files("unmask.server").joinpath("static/playground.html")
        text = page.read_text(encoding="utf-8") if page.is_file() else "<p>unmask server</p>"
        return HTMLResponse(text)

    return r
