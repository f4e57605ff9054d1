"""Routes contributed by feature packages (WebSocket, UI pages, FAQ, ...), kept out of app.py's core list."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Add feature routes; each feature module exposes add_routes(app)."""
    import importlib
    import importlib.util

    for module in (
        "scrm.web.realtime",
        "scrm.web.ui",
        "scrm.web.ui_desk",
        "scrm.web.api_faq",
        "scrm.web.api_tickets",
        "scrm.web.api_marketing",
        "scrm.web.api_campaigns",
        "scrm.web.api_desk",
        "scrm.web.api_notifications",
        "scrm.web.api_audit",
        "scrm.web.api_desk_tools",
        "scrm.web.api_conversation_tools",
        "scrm.web.api_wecom",
        "scrm.web.api_wechat_mass",
        "scrm.web.webchat",
        "scrm.web.api_inbox_members",
    ):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).add_routes(app)
