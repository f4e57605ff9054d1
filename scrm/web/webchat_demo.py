"""GET /demo/site: a sample shop page with the web chat widget, as a website would embed it."""

from __future__ import annotations

import html

from aiohttp import web
from sqlalchemy import select

from scrm.db.models import Inbox
from scrm.web.keys import CTX

_PAGE = """<!doctype html><html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{margin:0;font:16px/1.6 system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;color:#1f2933}}
header{{background:#0f172a;color:#fff;padding:18px 24px;font-weight:600}}main{{max-width:880px;margin:0 auto;padding:24px}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:16px}}
.card{{border:1px solid #e2e8f0;border-radius:10px;padding:16px}}.price{{color:#b91c1c;font-weight:600}}</style>
</head><body><header>{title}</header><main><h1>{headline}</h1><p>{intro}</p><div class="grid">
<div class="card"><h3>蓝牙耳机 Earbuds</h3><p class="price">¥299</p></div>
<div class="card"><h3>智能手表 Watch</h3><p class="price">¥899</p></div>
<div class="card"><h3>充电宝 Power bank</h3><p class="price">¥129</p></div></div></main>
<script src="/static/widget/loader.js" data-inbox="{inbox}" async></script></body></html>"""


async def demo_site(request: web.Request) -> web.StreamResponse:
    """The sample page for the first active web inbox (or ?inbox=N)."""
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        stmt = select(Inbox.id).where(Inbox.channel_type == "web", Inbox.active.is_(True)).order_by(Inbox.id).limit(1)
        wanted = request.query.get("inbox", "")
        if wanted.isdigit():
            stmt = stmt.where(Inbox.id == int(wanted))
        inbox_id = await s.scalar(stmt)
    if inbox_id is None:
        return web.Response(status=404, text="no web chat inbox yet: create one (channel type web) under Admin → Inboxes")
    zh = (request.query.get("lang") or request.headers.get("Accept-Language") or "zh").lower().startswith("zh")
    page = _PAGE.format(lang="zh-CN" if zh else "en", inbox=int(inbox_id),
                        title=html.escape("示例商城 Demo shop"),
                        headline=html.escape("欢迎光临" if zh else "Welcome to our shop"),
                        intro=html.escape("有问题？点右下角的按钮和我们聊天。" if zh else
                                          "Questions? Chat with us with the button at the bottom right."))
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    """Register GET /demo/site."""
    app.router.add_get("/demo/site", demo_site)
