"""Helpers for the web chat browser tests: a foreign website hosting the widget, and the inbox."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from channels.web.adapter import WebChatAdapter
from scrm.context import AppContext
from scrm.db.models import Inbox
from scrm.services.desk import settings as desk_settings

ALL_DAY = {"timezone": "Asia/Shanghai", "weekly": {d: "00:00-24:00" for d in
                                                  ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}
NEVER = {"timezone": "Asia/Shanghai", "weekly": {"mon": "09:00-09:01"}, "holidays": []}


async def make_web_inbox(ctx: AppContext, origins: list[str], **settings: Any) -> Inbox:
    async with ctx.db.transaction() as s:
        inbox = Inbox(name="Website", channel_type="web", settings={"allowed_origins": origins, **settings},
                      secrets=WebChatAdapter.init_secrets({}), reopen_policy="reopen")
        s.add(inbox)
        await s.flush()
    return inbox


async def set_hours(ctx: AppContext, hours: dict[str, Any]) -> None:
    async with ctx.db.transaction() as s:
        await desk_settings.set_section(s, "business_hours", hours)


def host_app(scrm_base: str, inbox_id: int, *, lang: str = "en", settings_js: str = "") -> web.Application:
    """A customer's website (another origin) with the widget's one script tag."""

    async def page(request: web.Request) -> web.Response:
        extra = f"<script>{settings_js}</script>" if settings_js else ""
        html = (f"<!doctype html><html lang='{request.query.get('lang', lang)}'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width, initial-scale=1'><title>Shop</title></head>"
                "<body style='font-family:sans-serif'><h1>Example shop</h1><p>Products and prices.</p>"
                f"{extra}<script src='{scrm_base}/static/widget/loader.js' data-inbox='{inbox_id}' async></script>"
                "</body></html>")
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    return app


async def allow(ctx: AppContext, inbox_id: int, *origins: str) -> None:
    """Let these sites embed the inbox's widget."""
    async with ctx.db.transaction() as s:
        row = await s.get(Inbox, inbox_id)
        assert row is not None
        row.settings = {**row.settings, "allowed_origins": list(origins)}
    ctx.adapters.forget(inbox_id)  # as the admin API does after an edit (the pool keeps a row 2 s)
