"""Outbound through the customer-service and template APIs, media, and WeChat's error codes."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from channels.wechat import WeChatAdapter
from scrm.domain import (
    Attachment,
    Choice,
    ContentType,
    InboundMessage,
    OutboundMessage,
    PermanentSendError,
    TransientSendError,
)
from tests.channels.wechat.fake_wechat_api import APP_ID, FakeWeChat
from tests.channels.wechat.wechat_callbacks import encrypted_request, text_xml
from tests.fakes import FakeRuntime, RecordingSink

CUSTOM = "/cgi-bin/message/custom/send"


def out(text: str | None = "您好", **kw: object) -> OutboundMessage:
    return OutboundMessage(delivery_id=3, idempotency_key="k3", inbox_id=1, recipient_id="oUser1", text=text, **kw)  # type: ignore[arg-type]


async def test_text_goes_to_custom_send_as_raw_utf8(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    await adapter.send(out("您好，已为您查询"))
    assert fake.custom_sends == [{"touser": "oUser1", "msgtype": "text", "text": {"content": "您好，已为您查询"}}]
    assert "您好".encode() in fake.custom_raw  # not \\u escapes, which WeChat may show literally


async def test_long_chinese_text_is_split_under_2048_bytes(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    long_text = "\n".join(f"第{i}条：这是一段很长的中文说明文字，用来测试分段发送。" for i in range(200))
    result = await adapter.send(out(long_text))
    parts = [m["text"]["content"] for m in fake.custom_sends]
    assert len(parts) > 1 and result.data["parts"] == len(parts)
    assert all(len(p.encode()) <= 2048 for p in parts)
    assert "".join(parts).replace("\n", "") == long_text.replace("\n", "")


async def test_choices_become_numbered_text(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    await adapter.send(out("请选择服务：", choices=(Choice("查询订单", "order"), Choice("转人工", "agent"))))
    content = fake.custom_sends[0]["text"]["content"]
    assert content.startswith("请选择服务：\n1. 查询订单\n2. 转人工")


async def test_image_is_uploaded_then_sent(adapter: WeChatAdapter, fake: FakeWeChat, runtime: FakeRuntime) -> None:
    key = await runtime.storage.save(b"\xff\xd8\xff\xe0jpeg", filename="发票.jpg", mime_type="image/jpeg")
    att = Attachment(kind="image", filename="发票.jpg", mime_type="image/jpeg", storage_key=key)
    await adapter.send(out(None, content_type=ContentType.IMAGE, attachments=(att,)))
    [(media_id, (kind, data, mime))] = fake.uploads.items()
    assert (kind, data, mime) == ("image", b"\xff\xd8\xff\xe0jpeg", "image/jpeg")
    assert fake.custom_sends == [{"touser": "oUser1", "msgtype": "image", "image": {"media_id": media_id}}]


async def test_text_with_image_sends_text_first(adapter: WeChatAdapter, fake: FakeWeChat, runtime: FakeRuntime) -> None:
    key = await runtime.storage.save(b"png", filename="a.png", mime_type="image/png")
    await adapter.send(out("见图", attachments=(Attachment(kind="image", storage_key=key),)))
    assert [m["msgtype"] for m in fake.custom_sends] == ["text", "image"]


async def test_news_when_metadata_asks(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    link = {"title": "退货指南", "description": "三步完成退货", "url": "https://shop.example.com/return"}
    await adapter.send(out("退货指南", metadata={"news": link}))
    [sent] = fake.custom_sends
    assert sent["msgtype"] == "news"
    assert sent["news"]["articles"][0]["url"] == "https://shop.example.com/return"


async def test_file_attachments_degrade_to_a_link(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    att = Attachment(kind="file", filename="合同.pdf", url="https://crm.example.com/f/1")
    await adapter.send(out(None, attachments=(att,)))
    assert fake.custom_sends[0]["text"]["content"] == "合同.pdf\nhttps://crm.example.com/f/1"


async def test_template_message_with_metadata(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    meta = {"template_id": "TPL_1", "data": {"first": "工单已更新", "keyword1": {"value": "#42"}}, "url": "https://x"}
    result = await adapter.send(out("ignored", content_type=ContentType.TEMPLATE, metadata=meta))
    [sent] = fake.template_sends
    assert sent == {
        "touser": "oUser1",
        "template_id": "TPL_1",
        "data": {"first": {"value": "工单已更新"}, "keyword1": {"value": "#42"}},
        "url": "https://x",
    }
    assert result.external_id == "200228333"  # matched later by TEMPLATESENDJOBFINISH's MsgID


async def test_template_message_with_inbox_field_mapping(
    make_adapter: Callable[..., WeChatAdapter], fake: FakeWeChat
) -> None:
    template = {"template_id": "TPL_TICKET", "fields": {"first": "text", "keyword1": "ticket_id"}}
    adapter = make_adapter(settings={"template": template})
    await adapter.send(out("您的工单有新回复", content_type=ContentType.TEMPLATE, metadata={"ticket_id": 42}))
    assert fake.template_sends[0]["template_id"] == "TPL_TICKET"
    assert fake.template_sends[0]["data"] == {"first": {"value": "您的工单有新回复"}, "keyword1": {"value": "42"}}


async def test_template_without_configuration_fails_clearly(adapter: WeChatAdapter) -> None:
    with pytest.raises(PermanentSendError) as info:
        await adapter.send(out("x", content_type=ContentType.TEMPLATE))
    assert info.value.code == "no_template"


@pytest.mark.parametrize(
    ("errcode", "unreachable"), [(45015, False), (45047, False), (48002, True), (43004, True), (40003, False)]
)
async def test_permanent_errors(adapter: WeChatAdapter, fake: FakeWeChat, errcode: int, unreachable: bool) -> None:
    fake.fail_next(CUSTOM, errcode)
    with pytest.raises(PermanentSendError) as info:
        await adapter.send(out())
    assert info.value.code == str(errcode)
    assert info.value.contact_unreachable is unreachable


async def test_other_errors_carry_wechats_message(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    fake.fail_next(CUSTOM, 40003)
    with pytest.raises(PermanentSendError, match="invalid openid"):
        await adapter.send(out())


async def test_system_busy_is_retried(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    fake.fail_next(CUSTOM, -1)
    with pytest.raises(TransientSendError):
        await adapter.send(out())


async def test_api_quota_backs_off_for_long(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    fake.fail_next(CUSTOM, 45009)
    with pytest.raises(TransientSendError) as info:
        await adapter.send(out())
    assert info.value.retry_after is not None and info.value.retry_after >= 600


async def test_http_5xx_is_retried(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    await adapter.test_connection()
    fake.http_errors[CUSTOM].append(502)
    with pytest.raises(TransientSendError):
        await adapter.send(out())


async def test_network_error_is_retried(make_adapter: Callable[..., WeChatAdapter]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = make_adapter(settings={"api_base_url": f"http://127.0.0.1:{port}"})
    with pytest.raises(TransientSendError):
        await adapter.send(out())


def test_rate_limit_is_per_app_id(adapter: WeChatAdapter) -> None:
    [limit] = adapter.rate_limits(out())
    assert limit.key == f"wechat:{APP_ID}:global" and limit.rate == 20


def test_capabilities_describe_the_service_window(adapter: WeChatAdapter) -> None:
    caps = adapter.capabilities
    assert caps.buttons is False and caps.reply_window is not None
    assert caps.reply_window.total_seconds() == 48 * 3600 and caps.idempotent_send is False


# -- media --------------------------------------------------------------------------------------


async def test_fetch_attachment_downloads_binary(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    fake.media["MEDIA_IMG"] = (b"\xff\xd8jpeg-bytes", "image/jpeg")
    fetched = await adapter.fetch_attachment(Attachment(kind="image", source={"media_id": "MEDIA_IMG"}))
    assert (fetched.data, fetched.mime_type, fetched.filename) == (b"\xff\xd8jpeg-bytes", "image/jpeg", "MEDIA_IMG.jpg")


async def test_fetch_attachment_json_error_is_a_clear_failure(adapter: WeChatAdapter) -> None:
    with pytest.raises(PermanentSendError, match="invalid media_id"):
        await adapter.fetch_attachment(Attachment(kind="voice", source={"media_id": "EXPIRED"}))


async def test_fetch_video_follows_video_url(adapter: WeChatAdapter) -> None:
    fetched = await adapter.fetch_attachment(Attachment(kind="video", source={"media_id": "VIDEO_1"}))
    assert fetched.mime_type == "video/mp4" and fetched.data.startswith(b"\x00\x00\x00\x18ftyp")


# -- end to end ---------------------------------------------------------------------------------


async def test_encrypted_text_in_then_agent_reply_out(
    adapter: WeChatAdapter, sink: RecordingSink, fake: FakeWeChat
) -> None:
    response = await adapter.handle_webhook(encrypted_request(text_xml("退款进度？", sender="oBuyer"), app_id=APP_ID), sink)
    assert response.body == b"success"
    [stored] = sink.items
    assert isinstance(stored, InboundMessage)
    reply = OutboundMessage(
        delivery_id=10, idempotency_key="d10", inbox_id=1, recipient_id=stored.sender_id, text="退款已原路退回"
    )
    await adapter.send(reply)
    assert fake.custom_sends == [{"touser": "oBuyer", "msgtype": "text", "text": {"content": "退款已原路退回"}}]
