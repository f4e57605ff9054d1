"""Sending through the fake Bot API: content, keyboards, splitting, error mapping, limits, setup."""

from __future__ import annotations

import logging

import pytest

from channels.base import RateLimit
from scrm.domain import (
    Attachment,
    Choice,
    OutboundMessage,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from tests.channels.telegram.fake_bot_api import DEFAULT_TOKEN, FakeBotApi

CHAT = "987654321"

# PTB 22 itself warns inside RetryAfter.__init__ about the future timedelta type.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


def outbound(text: str | None = "您好，您的订单已发货。", **kw) -> OutboundMessage:
    kw.setdefault("recipient_id", CHAT)
    return OutboundMessage(delivery_id=1, idempotency_key="d1", inbox_id=7, text=text, **kw)


async def test_text_reaches_the_chat_and_returns_external_id(adapter, bot_api: FakeBotApi) -> None:
    result = await adapter.send(outbound())
    (call,) = bot_api.calls_of("sendMessage")
    assert call.params["chat_id"] == CHAT
    assert call.params["text"] == "您好，您的订单已发货。"
    assert "parse_mode" not in call.params  # plain text: nothing to escape, "<b>" arrives as typed
    assert result.external_id == f"{CHAT}:1"


async def test_markup_characters_arrive_verbatim(adapter, bot_api: FakeBotApi) -> None:
    await adapter.send(outbound("价格 <b>5*2_1</b> [链接](x) & more"))
    assert bot_api.calls_of("sendMessage")[0].params["text"] == "价格 <b>5*2_1</b> [链接](x) & more"


async def test_long_text_is_split_below_4096(adapter, bot_api: FakeBotApi) -> None:
    text = "\n".join(f"第{i}行：" + "测试内容" * 20 for i in range(150))  # ~13,000 characters
    result = await adapter.send(outbound(text))
    sent = [c.params["text"] for c in bot_api.calls_of("sendMessage")]
    assert len(sent) == 4
    assert all(len(part) <= 4096 for part in sent)
    assert "".join(sent).replace("\n", "") == text.replace("\n", "")
    assert result.external_id == f"{CHAT}:1"
    assert result.data["external_ids"] == [f"{CHAT}:{i}" for i in range(1, 5)]


async def test_choices_become_inline_keyboard_on_last_part(adapter, bot_api: FakeBotApi) -> None:
    choices = (Choice("物流查询", "faq:shipping"), Choice("退换货", "faq:returns"))
    await adapter.send(outbound("请选择：", choices=choices))
    markup = bot_api.calls_of("sendMessage")[0].params["reply_markup"]
    assert markup == {"inline_keyboard": [[{"text": "物流查询", "callback_data": "faq:shipping"}],
                                          [{"text": "退换货", "callback_data": "faq:returns"}]]}


async def test_callback_data_is_kept_within_64_bytes(adapter, bot_api: FakeBotApi) -> None:
    long_payload = "faq:" + "退货政策" * 10  # 124 bytes in UTF-8
    await adapter.send(outbound("请选择：", choices=(Choice("退货政策", long_payload),)))
    button = bot_api.calls_of("sendMessage")[0].params["reply_markup"]["inline_keyboard"][0][0]
    data = button["callback_data"]
    assert len(data.encode("utf-8")) <= 64
    assert long_payload.startswith(data)  # cut on a character boundary, never mid-character


async def test_choices_without_text_get_a_prompt(adapter, bot_api: FakeBotApi) -> None:
    await adapter.send(outbound(None, choices=(Choice("是", "yes"), Choice("否", "no"))))
    (call,) = bot_api.calls_of("sendMessage")
    assert call.params["text"] == "请选择 / Please choose:"
    assert len(call.params["reply_markup"]["inline_keyboard"]) == 2


async def test_empty_message_fails_permanently(adapter, bot_api: FakeBotApi) -> None:
    with pytest.raises(PermanentSendError):
        await adapter.send(outbound(None))
    assert bot_api.calls == []


async def test_reply_quotes_the_customer_message(adapter, bot_api: FakeBotApi) -> None:
    await adapter.send(outbound(reply_to_external_id=f"{CHAT}:57"))
    params = bot_api.calls_of("sendMessage")[0].params
    assert params["reply_parameters"]["message_id"] == 57


async def test_photo_from_storage_with_caption(adapter, runtime, bot_api: FakeBotApi) -> None:
    key = await runtime.storage.save(b"\x89PNG fake image", filename="图.png", mime_type="image/png")
    result = await adapter.send(outbound("商品图片", attachments=(Attachment(kind="image", storage_key=key),)))
    (call,) = bot_api.calls_of("sendPhoto")
    assert call.files["photo"] == b"\x89PNG fake image"
    assert call.params["caption"] == "商品图片"
    assert bot_api.calls_of("sendMessage") == []
    assert result.external_id == f"{CHAT}:1"


async def test_document_from_storage(adapter, runtime, bot_api: FakeBotApi) -> None:
    key = await runtime.storage.save(b"%PDF-1.4", filename="合同.pdf", mime_type="application/pdf")
    att = Attachment(kind="file", filename="合同.pdf", storage_key=key)
    await adapter.send(outbound(None, attachments=(att,)))
    (call,) = bot_api.calls_of("sendDocument")
    assert call.files["document"] == b"%PDF-1.4"


async def test_missing_attachment_fails_permanently(adapter) -> None:
    with pytest.raises(PermanentSendError):
        await adapter.send(outbound(attachments=(Attachment(kind="image", storage_key="gone"),)))


async def test_rate_limited_429_is_transient_with_retry_after(adapter, bot_api: FakeBotApi) -> None:
    bot_api.fail_next("sendMessage", 429)
    with pytest.raises(TransientSendError) as err:
        await adapter.send(outbound())
    assert err.value.retry_after == 3


async def test_blocked_by_user_is_permanent_and_unreachable(adapter, bot_api: FakeBotApi) -> None:
    bot_api.fail_next("sendMessage", 403)
    with pytest.raises(PermanentSendError) as err:
        await adapter.send(outbound())
    assert err.value.contact_unreachable is True
    assert "blocked" in err.value.reason


async def test_bad_request_is_permanent_with_reason(adapter, bot_api: FakeBotApi) -> None:
    bot_api.fail_next("sendMessage", 400)
    with pytest.raises(PermanentSendError) as err:
        await adapter.send(outbound())
    assert err.value.contact_unreachable is False
    assert err.value.reason == "Chat not found"  # PTB drops the "Bad Request: " prefix


@pytest.mark.parametrize("status", [500, 502])
async def test_server_errors_are_transient(adapter, bot_api: FakeBotApi, status: int) -> None:
    bot_api.fail_next("sendMessage", status)
    with pytest.raises(TransientSendError) as err:
        await adapter.send(outbound())
    assert err.value.retry_after is None


async def test_unreachable_api_is_transient_and_hides_token(make_adapter, bot_api: FakeBotApi,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = make_adapter(api_base_url="http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(TransientSendError) as err:
        await adapter.send(outbound())
    assert DEFAULT_TOKEN not in str(err.value)
    assert DEFAULT_TOKEN.split(":")[1] not in caplog.text


async def test_rejected_token_is_permanent(adapter, bot_api: FakeBotApi) -> None:
    bot_api.token = "1:other"  # the fake now rejects our token with 401
    with pytest.raises(PermanentSendError) as err:
        await adapter.send(outbound())
    assert DEFAULT_TOKEN not in err.value.reason


def test_rate_limits_private_chat(adapter) -> None:
    assert list(adapter.rate_limits(outbound())) == [
        RateLimit("telegram:123456789:global", 30, 1.0),
        RateLimit(f"telegram:123456789:chat:{CHAT}", 1, 1.0),
    ]


def test_rate_limits_group_chat(adapter) -> None:
    limits = adapter.rate_limits(outbound(recipient_id="-1001234567890"))
    assert RateLimit("telegram:123456789:chat:-1001234567890", 20, 60.0) in limits
    assert RateLimit("telegram:123456789:global", 30, 1.0) in limits


async def test_setup_registers_webhook_with_secret(make_adapter, runtime, bot_api: FakeBotApi) -> None:
    runtime.public_url = "https://crm.example.com/"
    await make_adapter().setup()
    assert bot_api.webhook["url"] == "https://crm.example.com/webhooks/telegram/7"
    assert bot_api.webhook["secret_token"] == "s3cr3t-token_for-tests"
    assert "callback_query" in bot_api.webhook["allowed_updates"]
    assert "channel_post" not in bot_api.webhook["allowed_updates"]


async def test_setup_without_public_url_deletes_webhook(adapter, bot_api: FakeBotApi) -> None:
    bot_api.webhook = {"url": "https://old.example.com"}
    await adapter.setup()
    assert bot_api.webhook == {}
    assert len(bot_api.calls_of("deleteWebhook")) == 1


async def test_connection_names_the_bot(adapter) -> None:
    assert await adapter.test_connection() == "@scrm_test_bot (id 123456789)"


async def test_connection_with_rejected_token_raises_send_error(adapter, bot_api: FakeBotApi) -> None:
    bot_api.token = "1:other"
    with pytest.raises(SendError):
        await adapter.test_connection()


@pytest.mark.parametrize("chat, allowed", [("987654321", 1), ("-1001234567890", 20)])
async def test_fake_api_flood_control_answers_429_like_telegram(make_adapter, bot_api: FakeBotApi,
                                                                chat: str, allowed: int) -> None:
    bot_api.flood_control = True
    adapter = make_adapter()
    for _ in range(allowed):
        await adapter.send(outbound(recipient_id=chat))
    with pytest.raises(TransientSendError) as err:  # what the worker's limiter must prevent
        await adapter.send(outbound(recipient_id=chat))
    assert err.value.retry_after == 1
