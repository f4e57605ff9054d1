"""Telegram end to end: webhook / polling in -> stored -> agent reply -> worker -> fake Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from scrm.context import AppContext
from scrm.db.models import utcnow
from scrm.pollers import PollerManager
from tests.channels.telegram.fake_bot_api import DEFAULT_TOKEN, FakeBotApi
from tests.channels.telegram.helpers import load_fixture
from tests.conftest import make_inbox, wait_for
from tests.integration.helpers_integration import (
    agent_reply,
    deliver_all,
    deliveries,
    drop_bot_answers,
    identity,
    inbound,
    take_over,
    wait_inbound,
)

SECRET = "integration-webhook-secret_0123456789"
CHAT = 987654321  # the private chat of the fixtures' customer


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi() as api:
        yield api


@pytest.fixture
async def tg_inbox(ctx: AppContext, bot_api: FakeBotApi) -> Any:
    return await make_inbox(ctx, "telegram", name="Telegram 客服",
                            settings={"api_base_url": bot_api.base_url, "poll_timeout": 1},
                            secrets={"bot_token": DEFAULT_TOKEN, "webhook_secret": SECRET})


async def post_update(client: Any, inbox_id: int, update: dict[str, Any], secret: str | None = SECRET) -> Any:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
    return await client.post(f"/webhooks/telegram/{inbox_id}", json=update, headers=headers)


async def customer_writes(client: Any, ctx: AppContext, inbox_id: int, headers: dict[str, str]) -> int:
    """The customer's text arrives; the bot's own answer (if any) is delivered; the agent takes over."""
    resp = await post_update(client, inbox_id, load_fixture("message__text_chinese"))
    assert resp.status == 200, await resp.text()
    (msg,) = await inbound(ctx, inbox_id)
    await drop_bot_answers(ctx, msg.conversation_id)  # the FAQ bot answers the first message
    await take_over(client, headers, msg.conversation_id)
    return msg.conversation_id


def sent_texts(api: FakeBotApi) -> list[tuple[str, str]]:
    return [(str(c.params["chat_id"]), str(c.params["text"])) for c in api.calls_of("sendMessage")]


async def test_wrong_secret_is_refused_and_nothing_stored(client, ctx, tg_inbox) -> None:
    resp = await post_update(client, tg_inbox.id, load_fixture("message__text_chinese"), secret="wrong")
    assert resp.status == 401
    assert await inbound(ctx, tg_inbox.id) == []


async def test_update_in_agent_reply_out(client, ctx, tg_inbox, bot_api, admin_headers) -> None:
    update = load_fixture("message__text_chinese")
    cid = await customer_writes(client, ctx, tg_inbox.id, admin_headers)
    again = await post_update(client, tg_inbox.id, update)  # Telegram retries the same update_id
    assert again.status == 200
    assert len(await inbound(ctx, tg_inbox.id)) == 1

    await agent_reply(client, admin_headers, cid, "您好！订单已发货 <b>今天</b> & 明天到")
    assert await deliver_all(ctx) >= 1

    assert (str(CHAT), "您好！订单已发货 <b>今天</b> & 明天到") in sent_texts(bot_api)
    resp = await client.get(f"/api/v1/conversations/{cid}", headers=admin_headers)
    last = (await resp.json())["messages"][-1]
    assert last["delivery_status"] == "sent" and last["external_id"].startswith(f"{CHAT}:")


async def test_blocked_bot_marks_contact_unreachable(client, ctx, tg_inbox, bot_api, admin_headers) -> None:
    cid = await customer_writes(client, ctx, tg_inbox.id, admin_headers)
    await agent_reply(client, admin_headers, cid, "还在吗？")
    bot_api.fail_next("sendMessage", 403)
    await deliver_all(ctx)

    (failed,) = [d for d in await deliveries(ctx, conversation_id=cid) if d.payload["text"] == "还在吗？"]
    assert failed.status == "failed" and "blocked" in failed.last_error and failed.attempts == 1
    assert not (await identity(ctx, tg_inbox.id, str(CHAT))).reachable
    detail = await (await client.get(f"/api/v1/conversations/{cid}", headers=admin_headers)).json()
    assert detail["reply_window"]["open"] is False
    assert "unreachable" in detail["reply_window"]["reason"]
    refused = await agent_reply(client, admin_headers, cid, "再试一次", expect=409)
    assert "unreachable" in str(refused)


async def test_retry_after_requeues_with_the_given_delay(client, ctx, tg_inbox, bot_api, admin_headers) -> None:
    cid = await customer_writes(client, ctx, tg_inbox.id, admin_headers)
    await agent_reply(client, admin_headers, cid, "稍等")
    bot_api.fail_next("sendMessage", 429)  # "retry after 3"
    before = utcnow()
    await deliver_all(ctx)

    (queued,) = [d for d in await deliveries(ctx, conversation_id=cid) if d.payload["text"] == "稍等"]
    assert queued.status == "queued" and "retrying" in (queued.last_error or "")
    delay = queued.next_attempt_at - before
    assert timedelta(seconds=2.5) <= delay <= timedelta(seconds=5)
    assert sent_texts(bot_api).count((str(CHAT), "稍等")) == 1  # the one answered 429


async def test_photo_is_downloaded_and_served_only_to_agents(client, ctx, tg_inbox, bot_api, admin_headers) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + "照片".encode() * 500
    bot_api.add_file("AgACAgUAAxkBAAIBZ2Zmlarge", jpeg, file_path="photos/file_1.jpg")
    resp = await post_update(client, tg_inbox.id, load_fixture("message__photo"))
    assert resp.status == 200

    async def stored() -> dict[str, Any] | None:
        (msg,) = await inbound(ctx, tg_inbox.id)
        att = msg.attachments[0] if msg.attachments else {}
        return att if att.get("storage_key") or att.get("error") else None

    att = await wait_for(stored)
    assert att.get("storage_key"), att
    assert att["size"] == len(jpeg) and att["mime_type"] == "image/jpeg"
    assert [c.params["file_id"] for c in bot_api.calls_of("getFile")] == ["AgACAgUAAxkBAAIBZ2Zmlarge"]

    ok = await client.get(f"/files/{att['storage_key']}")  # the logged-in agent's cookie
    assert ok.status == 200 and await ok.read() == jpeg
    async with aiohttp.ClientSession() as anonymous:
        denied = await anonymous.get(client.make_url(f"/files/{att['storage_key']}"))
        assert denied.status == 401


async def test_expired_file_is_recorded_on_the_attachment(client, ctx, tg_inbox, bot_api, admin_headers) -> None:
    # No add_file: getFile answers "invalid file_id" (an expired or foreign id).
    await post_update(client, tg_inbox.id, load_fixture("message__photo"))

    async def settled() -> dict[str, Any] | None:
        (msg,) = await inbound(ctx, tg_inbox.id)
        att = msg.attachments[0]
        return att if att.get("error") or att.get("storage_key") else None

    att = await wait_for(settled)
    assert "storage_key" not in att and "invalid file_id" in att["error"].lower()
    assert DEFAULT_TOKEN.split(":")[1] not in att["error"]


async def test_polling_mode_stores_updates_once(ctx, tg_inbox, bot_api) -> None:
    bot_api.push_update(load_fixture("message__text_english"))
    manager = PollerManager(ctx, interval=60)
    try:
        await manager.tick()
        assert tg_inbox.id in manager.tasks
        await wait_inbound(ctx, tg_inbox.id, 1)
        bot_api.push_update(load_fixture("message__voice"))
        msgs = await wait_inbound(ctx, tg_inbox.id, 2)
        assert [m.content_type for m in msgs] == ["text", "voice"]
        assert bot_api.calls_of("deleteWebhook")  # polling clears any webhook first
        await manager.tick()  # a second supervision round keeps the single poller
        assert len(manager.tasks) == 1
    finally:
        await manager.stop_all()
    await asyncio.sleep(0)
    assert len(await inbound(ctx, tg_inbox.id)) == 2
