"""A customer writes, the agent's reply goes back to the same chat (adapter-level round trip)."""

from __future__ import annotations

from scrm.domain import InboundMessage, OutboundMessage
from tests.channels.telegram.fake_bot_api import FakeBotApi
from tests.channels.telegram.helpers import load_fixture, webhook_request
from tests.fakes import RecordingSink


async def test_update_in_then_agent_reply_reaches_same_chat(adapter, bot_api: FakeBotApi,
                                                            sink: RecordingSink) -> None:
    await adapter.handle_webhook(webhook_request(load_fixture("message__text_chinese")), sink)
    (stored,) = sink.stored.values()
    assert isinstance(stored, InboundMessage)

    reply = OutboundMessage(delivery_id=9, idempotency_key="d9", inbox_id=7, recipient_id=stored.sender_id,
                            text="您好！订单 #20240611 已于今天发出。", reply_to_external_id=stored.external_id)
    result = await adapter.send(reply)

    (call,) = bot_api.calls_of("sendMessage")
    assert call.params["chat_id"] == "987654321"
    assert call.params["text"] == "您好！订单 #20240611 已于今天发出。"
    assert call.params["reply_parameters"]["message_id"] == 101
    assert result.external_id == "987654321:1"
