"""Page paths of the desk pages in the single-page app (tickets, knowledge base, desk settings, audit
log, reports, preferences): each answers index.html; the app routes in the browser."""

from __future__ import annotations

from aiohttp import web

from scrm.web.ui import page

PAGES = ("/tickets", "/tickets/{id:\\d+}", "/tickets/new", "/kb", "/kb/{tab:[a-z_]+}", "/desk-settings",
         "/desk-settings/{tab:[a-z_]+}", "/audit", "/reports", "/preferences", "/notifications")


async def old_reports(request: web.Request) -> web.StreamResponse:
    """The former stand-alone reports page lives in the app now: same filters, new address."""
    raise web.HTTPMovedPermanently("/reports" + (f"?{request.query_string}" if request.query_string else ""))


def add_routes(app: web.Application) -> None:
    """Register the desk page paths and the redirect from /desk/reports."""
    have = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    for path in PAGES:
        if ("GET", path) not in have:
            app.router.add_get(path, page)
    if ("GET", "/desk/reports") not in have:
        app.router.add_get("/desk/reports", old_reports)
