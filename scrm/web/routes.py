"""Every route the server answers, from explicit lists: a missing or renamed module fails at import.

API modules declare their /api/v1 endpoints with @api (scrm.web.routing); page modules add their
own routes (pages of the single-page app, redirects, WebSockets) with add_routes(app).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from aiohttp import web

from scrm.web import (
    api_agents,
    api_attributes,
    api_audit,
    api_broadcasts,
    api_campaigns,
    api_canned,
    api_contacts,
    api_conversation_tools,
    api_conversations,
    api_desk,
    api_desk_tools,
    api_faq,
    api_inbox_members,
    api_inboxes,
    api_mail,
    api_marketing,
    api_notifications,
    api_profiles,
    api_segments,
    api_tickets,
    api_ui,
    api_webchat,
    api_wechat_mass,
    api_wecom,
    csat_page,
    realtime,
    ui,
    ui_desk,
    webchat,
)
from scrm.web.routing import API_ROUTES, ApiRoute

API_PREFIX = "/api/v1"

# The modules whose @api endpoints are served (and documented in /api/v1/openapi.json), in order.
API_MODULES: tuple[ModuleType, ...] = (
    api_agents,
    api_contacts,
    api_conversations,
    api_inboxes,
    api_mail,
    api_canned,
    api_ui,
    api_faq,
    api_tickets,
    api_profiles,
    api_attributes,
    api_segments,
    api_broadcasts,
    api_campaigns,
    api_desk,
    api_notifications,
    api_audit,
    api_desk_tools,
    api_conversation_tools,
    api_wecom,
    api_wechat_mass,
    api_webchat,
    api_inbox_members,
)

# Routes outside /api/v1, added after the API.
PAGE_ROUTES: tuple[Callable[[web.Application], None], ...] = (
    realtime.add_routes,  # GET /ws
    ui.add_routes,  # the agent inbox pages
    ui_desk.add_routes,
    api_marketing.add_routes,  # the marketer's pages, unsubscribe
    api_campaigns.add_routes,  # campaign pages, click redirect
    webchat.add_routes,  # the visitor's web chat
    csat_page.add_routes,  # public: the signed token is the credential
)


def api_routes() -> list[ApiRoute]:
    """The served @api endpoints, once each (method and path), in registration order."""
    modules = {m.__name__ for m in API_MODULES}
    seen: set[tuple[str, str]] = set()
    routes = []
    for route in API_ROUTES:
        if route.handler.__module__ not in modules:
            raise RuntimeError(f"{route.method} {route.path}: {route.handler.__module__} is not in API_MODULES")
        if (route.method, route.path) not in seen:
            seen.add((route.method, route.path))
            routes.append(route)
    return routes


def add_api_routes(app: web.Application) -> None:
    """Add every /api/v1 endpoint."""
    for route in api_routes():
        app.router.add_route(route.method, API_PREFIX + route.path, route.handler)


def add_page_routes(app: web.Application) -> None:
    """Add the routes outside /api/v1 (pages, WebSockets, redirects)."""
    for add in PAGE_ROUTES:
        add(app)
