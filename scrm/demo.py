"""`scrm demo`: an admin, an API inbox, a simulator inbox and believable sample conversations."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from scrm.bootstrap import build_context
from scrm.db.models import Agent, Inbox
from scrm.domain import ContactProfile, InboundMessage
from scrm.services.agents.accounts import create_agent
from scrm.services.conversations.ingest import ingest
from scrm.settings import Settings

DEMO_ADMIN = ("admin", "scrm-demo-2026")
DEMO_AGENT = ("agent", "scrm-agent-2026")
DEMO_WEB = "网站客服 Web chat"

SAMPLES: list[tuple[str, ContactProfile, list[str]]] = [
    ("wx-zhang", ContactProfile(name="张伟", phone="13800138000", language="zh"),
     ["你好，我上周买的蓝牙耳机还没发货，订单号 20261118-5521", "能帮我查一下物流吗？"]),
    ("wx-li", ContactProfile(name="李娜", language="zh"), ["请问7天无理由退货运费谁出？"]),
    ("u-emily", ContactProfile(name="Emily Chen", email="emily@example.com", language="en"),
     ["Hi, I was charged twice for order #A-1043. Can you refund one of them?"]),
    ("u-wang", ContactProfile(name="王芳", language="zh"), ["发票可以开公司抬头吗？", "我需要增值税专用发票"]),
    ("u-david", ContactProfile(name="David Müller", language="en"), ["Do you ship to Germany? How long does it take?"]),
    ("u-liu", ContactProfile(name="刘洋", phone="13912345678", language="zh"), ["转人工"]),
]


# A 微信客服 customer as kf/sync_msg returns them (translated by the real adapter code): they came in
# through the official account's menu (scene), asked about an order, shared a location and a product card.
WECOM_ITEMS: list[dict[str, Any]] = [
    {"msgid": "demo-kf-0", "origin": 4, "msgtype": "event", "event": {
        "event_type": "enter_session", "external_userid": "wmDemoCustomerXiaowang", "scene": "oamenu",
        "scene_param": "%E5%8F%8C%E5%8D%81%E4%B8%80"}},
    {"msgid": "demo-kf-1", "origin": 3, "external_userid": "wmDemoCustomerXiaowang", "msgtype": "text",
     "text": {"content": "你好，我在公众号菜单点进来的，双十一买的空气炸锅什么时候到？"}},
    {"msgid": "demo-kf-2", "origin": 3, "external_userid": "wmDemoCustomerXiaowang", "msgtype": "location",
     "location": {"latitude": 31.2304, "longitude": 121.4737, "name": "人民广场", "address": "上海市黄浦区人民大道"}},
    {"msgid": "demo-kf-3", "origin": 3, "external_userid": "wmDemoCustomerXiaowang", "msgtype": "channels_shop_product",
     "channels_shop_product": {"product_id": "10000123", "title": "空气炸锅 5L", "sales_price": 29900,
                               "shop_nickname": "演示小店"}},
]


async def seed_wecom_customer(ctx: Any) -> None:
    """A WeCom 微信客服 customer in the inbox (the demo inbox is not connected to WeCom, so it is disabled)."""
    from channels.wecom.kf_inbound import translate

    async with ctx.db.transaction() as s:
        inbox = Inbox(name="企业微信客服 WeCom (demo)", channel_type="wecom_kf", active=False,
                      settings={"corp_id": "ww0000000000demo00", "open_kfid": "wkDemoAccount",
                                "api_base_url": "http://127.0.0.1:9"},
                      secrets={"secret": "demo", "token": "demo", "encoding_aes_key": "a" * 43})
        s.add(inbox)
    now = int(datetime.now(UTC).timestamp()) - 1800
    profile = ContactProfile(name="小王（微信客服）", attributes={"gender": "male"})
    for n, item in enumerate(WECOM_ITEMS):
        for entry in translate({**item, "send_time": now + 60 * n}).items:
            entry = dataclasses.replace(entry, profile=profile) if isinstance(entry, InboundMessage) else entry
            await ingest(ctx, inbox, [entry])


async def seed_demo(settings: Settings) -> None:
    """Idempotent: running the demo twice does not duplicate anything."""
    ctx = await build_context(settings)
    try:
        async with ctx.db.transaction() as s:
            if await s.scalar(select(Agent.id).where(Agent.login == DEMO_ADMIN[0])) is None:
                await create_agent(s, login=DEMO_ADMIN[0], password=DEMO_ADMIN[1], role="admin", display_name="管理员 Admin")
                await create_agent(s, login=DEMO_AGENT[0], password=DEMO_AGENT[1], role="agent", display_name="客服小美 Mei")
            api_inbox = await s.scalar(select(Inbox).where(Inbox.name == "Demo API"))
            sim = None
            if api_inbox is None:
                api_inbox = Inbox(name="Demo API", channel_type="api", settings={},
                                  secrets={"secret": "demo-secret-change-me-0123456789"}, reopen_policy="reopen")
                sim = Inbox(name="客户模拟器 Simulator", channel_type="memory", settings={}, secrets={})
                s.add_all([api_inbox, sim])
                fresh = True
            else:
                fresh = False
        web_inbox = await _demo_web_inbox(ctx)
        if fresh:
            assert sim is not None  # created with the API inbox above
            # Samples arrive in the simulator inbox with the listeners on, so the demo shows real bot
            # answers and a real handoff ("转人工"); the worker delivers the bot's replies.
            from scrm.delivery.worker import OutboxWorker
            from scrm.listeners import install_listeners

            install_listeners(ctx)
            start = datetime.now(UTC) - timedelta(hours=3)
            for n, (sender, profile, texts) in enumerate(SAMPLES):
                for i, text in enumerate(texts):
                    item = InboundMessage(external_id=f"demo-{sender}-{i}", sender_id=sender, text=text, profile=profile,
                                          sent_at=start + timedelta(minutes=20 * n + i))
                    await ingest(ctx, sim, [item])
                    await ctx.bus.drain(30)
            await OutboxWorker(ctx).run_until_idle(timeout=60)
            await seed_wecom_customer(ctx)
        base = f"http://{settings.server.host}:{settings.server.port}"
        print(
            "\n".join([
                "",
                "scrm demo is ready / 演示数据已就绪",
                f"  open        {base}/",
                f"  admin       login {DEMO_ADMIN[0]!r}  password {DEMO_ADMIN[1]!r}",
                f"  agent       login {DEMO_AGENT[0]!r}  password {DEMO_AGENT[1]!r}",
                f"  API inbox   POST {base}/webhooks/api/{api_inbox.id} (secret 'demo-secret-change-me-0123456789')",
                f"  simulator   {base}/simulator   (chat as a customer, watch the inbox and the bot)",
                f"  web chat    {base}/demo/site   (the widget on a sample shop page; H5: {base}/chat/{web_inbox})",
                f"  API docs    {base}/api/v1/openapi.json",
                "",
            ]),
            flush=True,
        )
    finally:
        await ctx.close()


async def _demo_web_inbox(ctx: Any) -> int:
    """The demo's web chat inbox (the widget on /demo/site), created once."""
    from channels.web.adapter import WebChatAdapter

    async with ctx.db.transaction() as s:
        inbox = await s.scalar(select(Inbox).where(Inbox.channel_type == "web", Inbox.name == DEMO_WEB))
        if inbox is None:
            inbox = Inbox(name=DEMO_WEB, channel_type="web", settings={"prechat_enabled": True},
                          secrets=WebChatAdapter.init_secrets({}), reopen_policy="reopen")
            s.add(inbox)
            await s.flush()
        return int(inbox.id)
