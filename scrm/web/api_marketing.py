"""The marketer's part of the web app: profile, attribute, segment and broadcast APIs, their pages, unsubscribe.

Each API module registers its own /api/v1 routes (MY_ROUTES); add_routes adds them with the
single-page app's marketing pages and the public unsubscribe page.
"""

from __future__ import annotations

from aiohttp import web

from scrm.web import api_attributes, api_broadcasts, api_profiles, api_segments, unsubscribe

ROUTE_MODULES = (api_profiles, api_attributes, api_segments, api_broadcasts)
MARKETING_PAGES = ("/contacts", "/contacts/{id:\\d+}", "/segments", "/segments/{id:new|\\d+}", "/broadcasts",
                   "/broadcasts/{id:new|\\d+}")


def add_routes(app: web.Application) -> None:
    """Add the marketing /api/v1 routes (unless the core already added them), its pages and the unsubscribe page."""
    existing = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    for route in (r for m in ROUTE_MODULES for r in m.MY_ROUTES):
        if (route.method, "/api/v1" + route.path) not in existing:
            app.router.add_route(route.method, "/api/v1" + route.path, route.handler)
    from scrm.web.ui import page  # the marketer's pages are routes of the single-page app

    for path in MARKETING_PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/unsubscribe/{token}", unsubscribe.unsubscribe_page)
    app.router.add_post("/unsubscribe/{token}", unsubscribe.unsubscribe_post)
