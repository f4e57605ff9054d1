"""WeChat passive replies with the built-in worker running (issue 18): the worker leaves the bot's answer
to the callback that waits for it, and a callback whose answer the worker took anyway returns at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scrm.context import AppContext
from tests.channels.wechat.fake_wechat_api import APP_ID, APP_SECRET, FakeWeChat, serving
from tests.channels.wechat.wechat_callbacks import AES_KEY, TOKEN, decrypt_reply, encrypted_request, text_xml
from tests.conftest import make_inbox, wait_for
from tests.integration.helpers_integration import deliveries, inbound


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWeChat]:
    async with serving() as fake:
        yield fake


@pytest.fixture
async def served(aiohttp_client: Any, ctx: AppContext, settings: Any) -> Any:
    """The app as `scrm serve` runs it by default: the outbox worker in the same process."""
    from scrm.web.app import create_app

    return await aiohttp_client(create_app(settings, ctx=ctx, run_background=True))


async def _inbox(ctx: AppContext, fake: FakeWeChat, **settings: Any) -> Any:
    return await make_inbox(ctx, "wechat_oa", name="公众号",
                            settings={"app_id": APP_ID, "api_base_url": fake.base_url, **settings},
                            secrets={"app_secret": APP_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY})


async def _callback(client: Any, inbox_id: int, openid: str, msg_id: str) -> tuple[bytes, float]:
    req = encrypted_request(text_xml("怎么查看我的订单状态？", msg_id=msg_id, sender=openid), app_id=APP_ID)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.post(f"/webhooks/wechat/{inbox_id}", params=dict(req.query), data=req.body,
                             headers={"Content-Type": "text/xml"})
    assert resp.status == 200
    return await resp.read(), loop.time() - started


async def test_the_worker_leaves_the_answer_to_the_waiting_callback(served, ctx, fake_wechat) -> None:
    box = await _inbox(ctx, fake_wechat)
    for i in range(5):
        body, _ = await _callback(served, box.id, f"oPassive{i}", f"62000000000000009{i:02d}")
        reply = decrypt_reply(body, app_id=APP_ID)  # an XML reply, not `success`
        assert f"<ToUserName><![CDATA[oPassive{i}]]>" in reply and "<MsgType><![CDATA[text]]></MsgType>" in reply
    passive: list[str] = []
    rest: list[str] = []
    for msg in await inbound(ctx, box.id):
        answers = await deliveries(ctx, conversation_id=msg.conversation_id)
        assert answers and answers[0].claimed_by == "passive-reply" and answers[0].status == "sent"
        passive.append(answers[0].payload["text"])
        rest += [d.payload["text"] for d in answers[1:]]  # a passive reply carries one message; the worker the rest
    await wait_for(lambda: len(fake_wechat.custom_sends) == len(rest), timeout=10)
    sent = [s["text"]["content"] for s in fake_wechat.custom_sends]
    assert sorted(sent) == sorted(rest)  # each answer went out once: passively or through the API, never both


async def test_a_lost_passive_claim_answers_at_once(served, ctx, fake_wechat, monkeypatch) -> None:
    from scrm.channels_runtime import AppChannelRuntime
    from scrm.services.bot import rounds as bot

    monkeypatch.setattr(bot, "passive_hold", lambda message: None)  # the answer is not held back: the worker races
    claim = AppChannelRuntime._claim_passive

    async def worker_first(self: AppChannelRuntime, candidate: Any, marker: str) -> bool:
        # Decide the race for the worker (it can win it either way on a real server): the callback
        # tries its claim only once the worker has sent the answer, and must then answer at once.
        await wait_for(lambda: fake_wechat.custom_sends, timeout=10)
        return await claim(self, candidate, marker)

    monkeypatch.setattr(AppChannelRuntime, "_claim_passive", worker_first)
    # The longest wait WeChat allows, so "at once" stays distinguishable from "waited it out" on a busy
    # machine (the bot's answer and the worker's send come first: over 2 s seen under a parallel suite).
    box = await _inbox(ctx, fake_wechat, passive_reply_timeout=4.9)
    body, took = await _callback(served, box.id, "oRace", "6200000000000000999")
    assert body == b"success"
    assert took < 4.0  # not the full 4.9 s passive-reply wait
    await wait_for(lambda: fake_wechat.custom_sends, timeout=10)  # the worker delivered it through the API
    assert fake_wechat.custom_sends[0]["touser"] == "oRace"


def test_late_bot_record_stops_waits_but_keeps_probing() -> None:
    from scrm.channels_runtime import PASSIVE_PROBE_SECONDS, PASSIVE_SAMPLE, _PassiveRecord

    record = _PassiveRecord()
    for _ in range(PASSIVE_SAMPLE):
        record.add(late=True)
    assert record.bot_is_late(100.0) is False  # the probe of this interval still waits
    assert record.bot_is_late(100.5) is True  # the others answer `success` at once
    assert record.bot_is_late(100.0 + PASSIVE_PROBE_SECONDS) is False  # the next probe
    for _ in range(PASSIVE_SAMPLE // 2):
        record.add(late=False)  # the bot answers in time again
    assert record.bot_is_late(101.0) is False
