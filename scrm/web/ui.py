"""The agent inbox pages: every page path answers index.html (the single-page app routes in the browser)."""

from __future__ import annotations

import importlib

from aiohttp import web

from scrm.web.app import STATIC
from scrm.web.routing import API_ROUTES

# API modules owned by the UI; their @api routes are registered here because add_api_routes ran already.
UI_API_MODULES = ("scrm.web.api_canned", "scrm.web.api_ui")
PAGES = ("/login", "/conversations/{id:\\d+}", "/admin", "/admin/{page:[a-z_]+}", "/simulator", "/settings")


def _add_ui_api_routes(app: web.Application, prefix: str = "/api/v1") -> None:
    for name in UI_API_MODULES:
        importlib.import_module(name)
    existing = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    for route in API_ROUTES:
        if route.handler.__module__ in UI_API_MODULES and (route.method, prefix + route.path) not in existing:
            existing.add((route.method, prefix + route.path))
            app.router.add_route(route.method, prefix + route.path, route.handler)


async def page(request: web.Request) -> web.StreamResponse:
    """index.html with an explicit text/html type, so the security middleware adds the CSP to it."""
    return web.FileResponse(STATIC / "index.html",
                            headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"})


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "favicon.svg", headers={"Cache-Control": "public, max-age=86400"})


def add_routes(app: web.Application) -> None:
    """Register the page routes and the UI's API endpoints."""
    _add_ui_api_routes(app)
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/favicon.ico", favicon)
