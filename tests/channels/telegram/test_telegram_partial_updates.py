"""Older or partial updates (issue 18): a message whose nested object lacks fields that newer Bot API
versions made required is stored with what can be read, an "unsupported content" note and its raw update."""

from __future__ import annotations

import pytest

from scrm.domain import ContentType, InboundMessage
from tests.channels.telegram.fake_bot_api import FakeBotApi
from tests.channels.telegram.helpers import load_fixture, webhook_request
from tests.fakes import RecordingSink


async def _stored(adapter, sink: RecordingSink, name: str) -> InboundMessage:
    response = await adapter.handle_webhook(webhook_request(load_fixture(name)), sink)
    assert response.status == 200  # acknowledged: Telegram does not send it again and again
    [item] = sink.items
    assert isinstance(item, InboundMessage)
    return item


@pytest.mark.parametrize(("name", "dropped", "content_type", "text"), [
    ("message__sticker_old_api", ["sticker"], ContentType.EVENT, "[unsupported Telegram content: sticker]"),
    ("message__photo_caption_old_api", ["photo"], ContentType.TEXT, "这是我的发票，请查收"),
    ("message__game_old_api", ["game"], ContentType.EVENT, "[unsupported Telegram content: game]"),
    ("message__reply_to_old_sticker", ["reply_to_message"], ContentType.TEXT, "还没到，怎么办？"),
])
async def test_partial_update_is_stored_with_a_note_and_its_raw_json(adapter, sink: RecordingSink, name: str,
                                                                     dropped: list[str], content_type: str,
                                                                     text: str) -> None:
    item = await _stored(adapter, sink, name)
    raw = load_fixture(name)
    assert item.external_id == f"{raw['message']['chat']['id']}:{raw['message']['message_id']}"
    assert (item.content_type, item.text) == (content_type, text)
    assert item.payload["unsupported"] == dropped and item.payload["raw_update"] == raw
    assert item.payload["warnings"] == [f"unsupported Telegram content: {', '.join(dropped)} (kept in the raw update)"]
    assert item.sender_id == "987654321" and item.profile.name == "小明 王"


async def test_reply_to_an_unreadable_message_keeps_the_reference(adapter, sink: RecordingSink) -> None:
    item = await _stored(adapter, sink, "message__reply_to_old_sticker")
    assert item.reply_to_external_id == "987654321:301"


async def test_partial_updates_are_not_skipped_by_the_poller(adapter, bot_api: FakeBotApi, sink: RecordingSink) -> None:
    bot_api.push_update(load_fixture("message__photo_caption_old_api"))
    bot_api.push_update(load_fixture("message__text_chinese"))
    poller = adapter.poll(sink)
    await anext(poller)
    await poller.aclose()
    assert [i.external_id for i in sink.items] == ["987654321:302", "987654321:101"]


async def test_update_without_its_chat_is_still_refused(adapter, sink: RecordingSink) -> None:
    from scrm.domain import WebhookError

    with pytest.raises(WebhookError) as err:
        await adapter.handle_webhook(webhook_request(load_fixture("message__missing_chat")), sink)
    assert err.value.status == 400 and sink.items == []
