"""Replaying real WeChat callbacks: every sample becomes the right item or is ignored on purpose."""

from __future__ import annotations

import logging

import pytest

from channels.wechat import WeChatAdapter
from scrm.domain import ChannelEvent, ChannelEventKind, Choice, ContentType, InboundMessage, OutboundMessage
from tests.channels.wechat.fake_wechat_api import APP_ID
from tests.channels.wechat.wechat_callbacks import OWN, SHARED, encrypted_request, plain_request, text_xml
from tests.fakes import FakeRuntime, RecordingSink

K = ChannelEventKind
MESSAGES = SHARED / "messages"
MSG, EVT, IGNORED = "message", "event", "ignored"

# What each shared sample must become. A new sample without an entry fails the replay test.
EXPECTED: dict[str, tuple[str, str | None]] = {
    "parse_text_message.xml": (MSG, ContentType.TEXT),
    "parse_image_message.xml": (MSG, ContentType.IMAGE),
    "parse_voice_message.xml": (MSG, ContentType.VOICE),
    "parse_video_message.xml": (MSG, ContentType.VIDEO),
    "parse_location_message.xml": (MSG, ContentType.LOCATION),
    "parse_link_message.xml": (MSG, ContentType.LINK),
    "click_event.xml": (MSG, ContentType.POSTBACK),
    "parse_click_event.xml": (MSG, ContentType.POSTBACK),
    "subscribe_event.xml": (EVT, K.CONTACT_SUBSCRIBED),
    "parse_subscribe_event.xml": (EVT, K.CONTACT_SUBSCRIBED),
    "subscribe_scan_event.xml": (EVT, K.CONTACT_SUBSCRIBED),
    "parse_subscribe_scan_event.xml": (EVT, K.CONTACT_SUBSCRIBED),
    "parse_subscribe_event_with_last_trade_no.xml": (EVT, K.CONTACT_SUBSCRIBED),
    "parse_subscribe_scan_product_event__0.xml": (EVT, K.CONTACT_SUBSCRIBED),
    "parse_subscribe_scan_product_event__1.xml": (EVT, K.CONTACT_SUBSCRIBED),
    "unsubscribe_event.xml": (EVT, K.CONTACT_UNSUBSCRIBED),
    "scan_event.xml": (EVT, K.INTERACTION),
    "parse_scan_event.xml": (EVT, K.INTERACTION),
    "view_event.xml": (EVT, K.INTERACTION),
    "parse_view_event.xml": (EVT, K.INTERACTION),
    "location_event.xml": (EVT, K.INTERACTION),
    "parse_location_event.xml": (EVT, K.INTERACTION),
    "scan_code_push_event.xml": (EVT, K.INTERACTION),
    "scan_code_waitmsg_event.xml": (EVT, K.INTERACTION),
    "pic_sysphoto_event.xml": (EVT, K.INTERACTION),
    "pic_photo_or_album_event.xml": (EVT, K.INTERACTION),
    "pic_wechat_event.xml": (EVT, K.INTERACTION),
    "location_select_event.xml": (EVT, K.INTERACTION),
    "template_send_job_finish_event.xml": (EVT, K.DELIVERY_STATUS),
    "mass_send_job_finish_event.xml": (EVT, K.DELIVERY_STATUS),
    # Deliberately ignored (logged): account notices and features this product does not offer.
    "annual_renew_event.xml": (IGNORED, None),
    "naming_verify_fail_event.xml": (IGNORED, None),
    "naming_verify_success_event.xml": (IGNORED, None),
    "qualification_verify_fail_event.xml": (IGNORED, None),
    "qualification_verify_success_event.xml": (IGNORED, None),
    "verify_expired_event.xml": (IGNORED, None),
    "kf_create_session_event.xml": (IGNORED, None),
    "kf_close_session_event.xml": (IGNORED, None),
    "kf_switch_session_event.xml": (IGNORED, None),
    "merchant_order_event.xml": (IGNORED, None),
    "parse_device_bind_event.xml": (IGNORED, None),
    "parse_device_text_event.xml": (IGNORED, None),
    "parse_submit_invoice_title_event.xml": (IGNORED, None),
    "parse_update_invoice_status_event.xml": (IGNORED, None),
    "parse_user_authorize_invoice_event.xml": (IGNORED, None),
    "shakearound_user_shake_event.xml": (IGNORED, None),
    "wifi_connected_event.xml": (IGNORED, None),
    "template_subscribe_msg_change_event.xml": (EVT, K.CONTACT_UPDATED),
    "template_subscribe_msg_popup_event.xml": (EVT, K.CONTACT_UPDATED),
    "template_subscribe_msg_sent_event.xml": (EVT, K.CONTACT_UPDATED),
    "parse_unknown_message.xml": (IGNORED, None),
}


# Our own samples (tests/channels/wechat/fixtures): events the shared set lacks. Attack samples are
# refused before translation (test_wechat_callback.py).
OWN_EXPECTED: dict[str, tuple[str, str | None]] = {
    "shortvideo__basic.xml": (MSG, ContentType.VIDEO),
    "voice__with_recognition.xml": (MSG, ContentType.VOICE),
    "template_send_job_finish__user_block.xml": (EVT, K.DELIVERY_STATUS),
    "view_miniprogram__menu.xml": (EVT, K.INTERACTION),
    "publishjobfinish__success.xml": (EVT, K.DELIVERY_STATUS),
    "publishjobfinish__review_failed.xml": (EVT, K.DELIVERY_STATUS),
}
ATTACKS = {"attack__billion_laughs.xml", "attack__external_entity.xml"}


def test_every_shared_sample_has_an_expectation() -> None:
    assert sorted(p.name for p in MESSAGES.glob("*.xml")) == sorted(EXPECTED)


def test_every_own_sample_has_an_expectation() -> None:
    assert sorted(p.name for p in OWN.glob("*.xml")) == sorted([*OWN_EXPECTED, *ATTACKS])


@pytest.mark.parametrize("path", [MESSAGES / n for n in sorted(EXPECTED)] + [OWN / n for n in sorted(OWN_EXPECTED)],
                         ids=lambda p: p.name)
async def test_replay_sample(
    adapter: WeChatAdapter, sink: RecordingSink, caplog: pytest.LogCaptureFixture, path: object
) -> None:
    caplog.set_level(logging.INFO, logger="channels.wechat")
    response = await adapter.handle_webhook(plain_request(path.read_bytes()), sink)  # type: ignore[attr-defined]
    assert (response.status, response.body) == (200, b"success")  # never an error page to WeChat
    what, kind = {**EXPECTED, **OWN_EXPECTED}[path.name]  # type: ignore[attr-defined]
    if what == IGNORED:
        assert sink.batches == []
        assert any("ignoring" in r.getMessage() for r in caplog.records), "ignored without a log line"
        return
    [item] = sink.items
    if what == MSG:
        assert isinstance(item, InboundMessage) and item.content_type == kind
        assert item.external_id and item.sender_id
    else:
        assert isinstance(item, ChannelEvent) and item.kind == kind
        assert item.external_id


async def replay(adapter: WeChatAdapter, sink: RecordingSink, path: object) -> ChannelEvent | InboundMessage:
    await adapter.handle_webhook(plain_request(path.read_bytes()), sink)  # type: ignore[attr-defined]
    return sink.items[-1]


async def test_text_message_fields(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "parse_text_message.xml")
    assert isinstance(item, InboundMessage)
    assert (item.text, item.sender_id, item.external_id) == ("this is a test", "fromUser", "1234567890123456")
    assert item.sent_at is not None and int(item.sent_at.timestamp()) == 1348831860


async def test_image_keeps_media_id_and_pic_url(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "parse_image_message.xml")
    assert isinstance(item, InboundMessage)
    [att] = item.attachments
    assert att.kind == "image"
    assert dict(att.source) == {"media_id": "media_id", "pic_url": "this is a url"}


async def test_voice_keeps_recognition_text(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, OWN / "voice__with_recognition.xml")
    assert isinstance(item, InboundMessage)
    assert item.text == "我的快递到哪里了"
    assert item.content_type == ContentType.VOICE
    assert dict(item.attachments[0].source) == {"media_id": "voice_media_id", "format": "amr"}
    assert item.attachments[0].mime_type == "audio/amr"


async def test_voice_without_recognition_has_no_text(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "parse_voice_message.xml")
    assert isinstance(item, InboundMessage) and item.text is None
    assert item.attachments[0].source["media_id"] == "media_id"


async def test_shortvideo_is_a_video(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, OWN / "shortvideo__basic.xml")
    assert isinstance(item, InboundMessage) and item.content_type == ContentType.VIDEO
    assert item.attachments[0].source == {"media_id": "short_media_id", "thumb_media_id": "short_thumb_id"}


async def test_location_message(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "parse_location_message.xml")
    assert isinstance(item, InboundMessage)
    assert item.text == "位置信息"
    assert (item.payload["latitude"], item.payload["longitude"]) == (23.134521, 113.358803)
    assert item.payload["label"] == "位置信息"


async def test_link_message(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "parse_link_message.xml")
    assert isinstance(item, InboundMessage)
    assert item.payload["title"] == "公众平台官网链接" and item.payload["url"] == "url"
    assert item.payload["description"] == "公众平台官网链接"


async def test_subscribe_with_qrscene_records_source(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "subscribe_scan_event.xml")
    assert isinstance(item, ChannelEvent)
    assert item.data["source"] == "123123"  # without the qrscene_ prefix
    assert item.external_id == "FromUser:123456789:subscribe"


async def test_plain_subscribe_has_no_source(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "subscribe_event.xml")
    assert isinstance(item, ChannelEvent) and "source" not in item.data


async def test_unsubscribe_marks_contact(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "unsubscribe_event.xml")
    assert isinstance(item, ChannelEvent)
    assert (item.kind, item.sender_id) == (K.CONTACT_UNSUBSCRIBED, "FromUser")


async def test_scan_by_follower_carries_scene(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "scan_event.xml")
    assert isinstance(item, ChannelEvent) and item.data["scene"] == "SCENE_VALUE"


async def test_menu_click_is_a_postback_for_the_bot(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "click_event.xml")
    assert isinstance(item, InboundMessage)
    payload = dict(item.payload)
    assert payload.pop("passive_reply_until") > 0  # its callback waits for the bot's answer
    assert payload == {"choice": "EVENTKEY", "menu": True}


async def test_view_and_location_events(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    view = await replay(adapter, sink, MESSAGES / "view_event.xml")
    loc = await replay(adapter, sink, MESSAGES / "location_event.xml")
    assert isinstance(view, ChannelEvent) and view.data["url"] == "www.qq.com"
    assert isinstance(loc, ChannelEvent)
    assert (loc.data["latitude"], loc.data["longitude"]) == (23.137466, 113.352425)


async def test_template_job_finish_updates_delivery(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    ok = await replay(adapter, sink, MESSAGES / "template_send_job_finish_event.xml")
    blocked = await replay(adapter, sink, OWN / "template_send_job_finish__user_block.xml")
    assert isinstance(ok, ChannelEvent) and isinstance(blocked, ChannelEvent)
    assert (ok.external_id, ok.data["status"], ok.data["error"]) == ("200163836", "delivered", None)
    assert (blocked.external_id, blocked.data["status"]) == ("200163840", "failed")
    assert blocked.data["error"] == "failed:user block"


async def test_miniprogram_menu_click_is_recorded_like_a_view_click(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, OWN / "view_miniprogram__menu.xml")
    assert isinstance(item, ChannelEvent) and item.kind == K.INTERACTION and item.sender_id == "oUser1"
    assert dict(item.data) == {"event": "view_miniprogram", "pagepath": "pages/order/list?from=menu",
                               "menu_id": "MENUID123", "miniprogram": True}
    assert item.external_id == "oUser1:1700000100:view_miniprogram"


async def test_publish_job_finish_is_recorded_like_a_broadcast_result(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    ok = await replay(adapter, sink, OWN / "publishjobfinish__success.xml")
    failed = await replay(adapter, sink, OWN / "publishjobfinish__review_failed.xml")
    assert isinstance(ok, ChannelEvent) and isinstance(failed, ChannelEvent)
    assert (ok.external_id, ok.data["status"], ok.data["error"], ok.sender_id) == ("2247503051", "delivered", None, None)
    assert ok.data["article_urls"] == ["https://mp.weixin.qq.com/s/b5O2OUs25HBxRceL7hfReg"]
    assert ok.data["article_id"] == "b5O2OUs25HBxRceL7hfReg-U9QGeq9zQjiDvyWP4Hq4"
    assert (failed.external_id, failed.data["status"]) == ("2247503052", "failed")
    assert failed.data["error"] == "rejected by the platform's review" and failed.data["fail_idx"] == ["1", "2"]


async def test_mass_send_job_finish_reports_failure(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    item = await replay(adapter, sink, MESSAGES / "mass_send_job_finish_event.xml")
    assert isinstance(item, ChannelEvent)
    assert (item.external_id, item.data["status"], item.data["error"]) == ("1000001625", "failed", "err(30003)")
    assert item.sender_id is None  # WeChat's broadcast assistant is not a contact


# -- retries and the 5-second rule --------------------------------------------------------------


async def test_retried_callbacks_carry_the_same_ids(adapter: WeChatAdapter, sink: RecordingSink) -> None:
    for name in ("parse_text_message.xml", "subscribe_scan_event.xml", "click_event.xml"):
        for _ in range(3):  # WeChat retries up to three times
            await adapter.handle_webhook(plain_request((MESSAGES / name).read_bytes()), sink)
    ids = [item.external_id for item in sink.items]
    assert len(ids) == 9 and len(set(ids)) == 3


def bot_reply(text: str = "您好！订单已发货。", choices: tuple[Choice, ...] = ()) -> OutboundMessage:
    return OutboundMessage(
        delivery_id=9, idempotency_key="k9", inbox_id=1, recipient_id="oUser1", text=text, choices=choices
    )


async def test_passive_reply_is_encrypted_when_the_request_was(
    adapter: WeChatAdapter, runtime: FakeRuntime, sink: RecordingSink
) -> None:
    from tests.channels.wechat.wechat_callbacks import decrypt_reply

    runtime.reply = bot_reply()
    response = await adapter.handle_webhook(encrypted_request(text_xml("我的订单呢"), app_id=APP_ID), sink)
    assert b"<Encrypt>" in response.body and "您好" not in response.body.decode()
    plain = decrypt_reply(response.body, app_id=APP_ID)
    assert "<Content><![CDATA[您好！订单已发货。]]></Content>" in plain
    assert "<ToUserName><![CDATA[oUser1]]></ToUserName>" in plain
    assert "<FromUserName><![CDATA[gh_account]]></FromUserName>" in plain
    [(outcome, timeout)] = runtime.passive_calls
    assert outcome.message_id is not None and 0 < timeout <= 4.0


async def test_passive_reply_in_plaintext_mode_with_choices(
    adapter: WeChatAdapter, runtime: FakeRuntime, sink: RecordingSink
) -> None:
    runtime.reply = bot_reply("请选择：", (Choice("查订单", "order"), Choice("人工客服", "agent")))
    response = await adapter.handle_webhook(plain_request(text_xml()), sink)
    body = response.body.decode()
    assert "<MsgType><![CDATA[text]]></MsgType>" in body
    assert "1. 查订单\n2. 人工客服" in body


async def test_retry_of_answered_message_gets_the_same_reply(
    adapter: WeChatAdapter, runtime: FakeRuntime, sink: RecordingSink
) -> None:
    runtime.reply = bot_reply()
    first = await adapter.handle_webhook(plain_request(text_xml()), sink)
    second = await adapter.handle_webhook(plain_request(text_xml()), sink)
    assert [o.duplicate for o, _ in runtime.passive_calls] == [False, True]
    strip = lambda b: b.split(b"<CreateTime>")[0]  # noqa: E731
    assert strip(first.body) == strip(second.body) and b"CDATA[text]" in first.body


async def test_no_reply_in_time_answers_success(
    adapter: WeChatAdapter, runtime: FakeRuntime, sink: RecordingSink
) -> None:
    response = await adapter.handle_webhook(plain_request(text_xml()), sink)
    assert response.body == b"success" and len(runtime.passive_calls) == 1


async def test_events_do_not_wait_for_a_passive_reply(
    adapter: WeChatAdapter, runtime: FakeRuntime, sink: RecordingSink
) -> None:
    runtime.reply = bot_reply()
    response = await adapter.handle_webhook(plain_request((MESSAGES / "subscribe_event.xml").read_bytes()), sink)
    assert response.body == b"success" and runtime.passive_calls == []


async def test_menu_click_may_be_answered_passively(
    adapter: WeChatAdapter, runtime: FakeRuntime, sink: RecordingSink
) -> None:
    runtime.reply = bot_reply("菜单回复")
    response = await adapter.handle_webhook(plain_request((MESSAGES / "click_event.xml").read_bytes()), sink)
    assert "菜单回复" in response.body.decode()


async def test_reply_text_cannot_break_out_of_cdata(
    adapter: WeChatAdapter, runtime: FakeRuntime, sink: RecordingSink
) -> None:
    import xmltodict

    runtime.reply = bot_reply("a]]><MsgType>news</MsgType>b")
    response = await adapter.handle_webhook(plain_request(text_xml()), sink)
    parsed = xmltodict.parse(response.body)["xml"]
    assert parsed["MsgType"] == "text" and parsed["Content"] == "a]]><MsgType>news</MsgType>b"


async def test_overlong_answer_is_left_to_the_customer_service_api(
    adapter: WeChatAdapter, runtime: FakeRuntime, sink: RecordingSink
) -> None:
    runtime.reply = bot_reply("长" * 1000)  # 3000 bytes: more than one passive reply can carry
    response = await adapter.handle_webhook(plain_request(text_xml()), sink)
    assert response.body == b"success"  # the worker sends it in two custom/send parts


async def test_slow_commit_leaves_no_time_for_a_passive_reply(
    make_adapter: object, runtime: FakeRuntime, sink: RecordingSink
) -> None:
    import asyncio

    adapter = make_adapter(settings={"passive_reply_timeout": 0.05})  # type: ignore[operator]
    runtime.reply = bot_reply()

    async def slow_sink(items: list) -> list:  # type: ignore[type-arg]
        await asyncio.sleep(0.08)
        return await sink(items)

    response = await adapter.handle_webhook(plain_request(text_xml()), slow_sink)
    assert response.body == b"success" and runtime.passive_calls == []  # the worker sends it instead


async def test_failing_passive_reply_still_acknowledges(
    adapter: WeChatAdapter, runtime: FakeRuntime, sink: RecordingSink
) -> None:
    async def broken(outcome: object, timeout: float) -> None:
        raise RuntimeError("bus down")

    runtime.passive_reply = broken  # type: ignore[method-assign]
    response = await adapter.handle_webhook(plain_request(text_xml()), sink)
    assert response.body == b"success" and len(sink.items) == 1
