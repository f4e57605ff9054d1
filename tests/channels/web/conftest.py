"""Fixtures for web chat: a web inbox and a visitor client that talks to it like the widget does."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from channels.web.adapter import WebChatAdapter
from scrm.context import AppContext
from scrm.db.models import Inbox
from scrm.services.desk import settings as desk_settings

SITE = "https://shop.example.com"
ALL_DAY = {"timezone": "Asia/Shanghai", "weekly": {d: "00:00-24:00" for d in
                                                  ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}


async def make_web_inbox(ctx: AppContext, **settings: Any) -> Inbox:
    async with ctx.db.transaction() as s:
        inbox = Inbox(name="Website", channel_type="web", settings={"allowed_origins": [SITE], **settings},
                      secrets=WebChatAdapter.init_secrets({}), reopen_policy="reopen")
        s.add(inbox)
        await s.flush()
        await desk_settings.set_section(s, "business_hours", ALL_DAY)
    return inbox


class Visitor:
    """A visitor's browser as the chat page drives the server (the page is on the server's own origin)."""

    def __init__(self, client: Any, inbox: Inbox, origin: str | None = None) -> None:
        self.client = client
        self.inbox = inbox
        self.origin = origin
        self.token: str | None = None

    def headers(self) -> dict[str, str]:
        h = {"X-Scrm-Visitor": self.token} if self.token else {}
        if self.origin:
            h["Origin"] = self.origin
        return h

    async def session(self, status: int = 200, **body: Any) -> dict[str, Any]:
        r = await self.client.post(f"/chat/{self.inbox.id}/session", json={"token": self.token, **body},
                                   headers=self.headers())
        data = await r.json()
        assert r.status == status, data
        if status == 200 and data.get("token"):
            self.token = data["token"]
        return data  # type: ignore[no-any-return]

    async def send(self, text: str, client_id: str | None = None, status: int | None = None, **extra: Any) -> dict[str, Any]:
        r = await self.client.post(f"/chat/{self.inbox.id}/messages", headers=self.headers(),
                                   json={"client_id": client_id or uuid.uuid4().hex, "text": text, **extra})
        data = await r.json()
        if status is not None:
            assert r.status == status, data
        return data  # type: ignore[no-any-return]

    async def history(self, after: int = 0) -> dict[str, Any]:
        r = await self.client.get(f"/chat/{self.inbox.id}/messages?after={after}", headers=self.headers())
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


@pytest.fixture
async def web_inbox(ctx: AppContext) -> Inbox:
    desk_settings.clear_cache()
    inbox = await make_web_inbox(ctx)
    yield inbox
    desk_settings.clear_cache()


@pytest.fixture
def visitor(client: Any, web_inbox: Inbox) -> Visitor:
    return Visitor(client, web_inbox)
