"""The agent inbox pages: every page path answers index.html (the single-page app routes in the browser)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"
PAGES = ("/login", "/conversations/{id:\\d+}", "/admin", "/admin/{page:[a-z_]+}", "/simulator", "/settings")


async def page(request: web.Request) -> web.StreamResponse:
    """index.html with an explicit text/html type, so the security middleware adds the CSP to it."""
    return web.FileResponse(STATIC / "index.html",
                            headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"})


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "favicon.svg", headers={"Cache-Control": "public, max-age=86400"})


def add_routes(app: web.Application) -> None:
    """Register the page routes (the UI's API endpoints, api_canned and api_ui: scrm.web.routes)."""
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/favicon.ico", favicon)
