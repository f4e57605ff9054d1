"""The marketer's part of the web app: profile, attribute, segment and broadcast APIs, their pages, unsubscribe.

The API modules (api_profiles, api_attributes, api_segments, api_broadcasts) are listed in
scrm.web.routes; add_routes adds the single-page app's marketing pages and the public unsubscribe page.
"""

from __future__ import annotations

from aiohttp import web

from scrm.web import unsubscribe

MARKETING_PAGES = ("/contacts", "/contacts/{id:\\d+}", "/segments", "/segments/{id:new|\\d+}", "/broadcasts",
                   "/broadcasts/{id:new|\\d+}")


def add_routes(app: web.Application) -> None:
    """Add the marketer's pages and the unsubscribe page."""
    from scrm.web.ui import page  # the marketer's pages are routes of the single-page app

    for path in MARKETING_PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/unsubscribe/{token}", unsubscribe.unsubscribe_page)
    app.router.add_post("/unsubscribe/{token}", unsubscribe.unsubscribe_post)
