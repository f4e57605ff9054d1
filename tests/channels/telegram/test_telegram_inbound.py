"""One test per inbound update condition, replayed from fixtures through the webhook."""

from __future__ import annotations

from datetime import UTC, datetime

from scrm.domain import ChannelEvent, ChannelEventKind, ContentType, InboundMessage
from tests.channels.telegram.fake_bot_api import FakeBotApi
from tests.fakes import RecordingSink

CUSTOMER = "987654321"


def only_message(items: list) -> InboundMessage:
    assert len(items) == 1
    assert isinstance(items[0], InboundMessage)
    return items[0]


async def test_private_chinese_text_becomes_one_message_with_profile(deliver) -> None:
    msg = only_message(await deliver("message__text_chinese"))
    assert msg.text == "你好，我想咨询一下订单 #20240611 的物流状态。"
    assert msg.content_type == ContentType.TEXT
    assert msg.external_id == f"{CUSTOMER}:101"
    assert msg.sender_id == CUSTOMER
    assert msg.profile is not None
    assert (msg.profile.name, msg.profile.username, msg.profile.language) == ("小明 王", "xiaoming_wang", "zh-hans")
    assert msg.sent_at == datetime.fromtimestamp(1718000000, UTC)
    assert msg.payload["chat_id"] == 987654321
    assert msg.payload["chat_type"] == "private"
    assert msg.payload["update_id"] == 10001


async def test_english_text(deliver) -> None:
    msg = only_message(await deliver("message__text_english"))
    assert msg.text == "Hello, where is my order?"


async def test_photo_keeps_largest_size_and_caption(deliver) -> None:
    msg = only_message(await deliver("message__photo"))
    assert msg.content_type == ContentType.IMAGE
    assert msg.text == "收到的商品有破损，请看照片"
    (att,) = msg.attachments
    assert att.kind == "image"
    assert dict(att.source) == {"file_id": "AgACAgUAAxkBAAIBZ2Zmlarge", "file_unique_id": "AQADlarge",
                                "file_size": 82130}


async def test_document_keeps_chinese_filename_and_mime(deliver) -> None:
    msg = only_message(await deliver("message__document"))
    assert msg.content_type == ContentType.FILE
    (att,) = msg.attachments
    assert (att.kind, att.filename, att.mime_type, att.size) == ("file", "发票-2024.pdf", "application/pdf", 48213)
    assert att.source["file_id"] == "BQACAgUAAxkBAAIBaGZmdoc"
    assert msg.text == "这是发票"


async def test_voice(deliver) -> None:
    msg = only_message(await deliver("message__voice"))
    assert msg.content_type == ContentType.VOICE
    assert msg.attachments[0].kind == "voice"
    assert msg.attachments[0].mime_type == "audio/ogg"
    assert msg.payload["duration"] == 4


async def test_audio_shows_performer_and_title(deliver) -> None:
    msg = only_message(await deliver("message__audio"))
    assert msg.content_type == ContentType.AUDIO
    assert msg.text == "邓丽君 - 月亮代表我的心"
    assert msg.attachments[0].filename == "月亮代表我的心.mp3"


async def test_video(deliver) -> None:
    msg = only_message(await deliver("message__video"))
    assert msg.content_type == ContentType.VIDEO
    assert msg.text == "开箱视频"
    assert (msg.attachments[0].kind, msg.attachments[0].mime_type) == ("video", "video/mp4")


async def test_video_note(deliver) -> None:
    msg = only_message(await deliver("message__video_note"))
    assert msg.content_type == ContentType.VIDEO
    assert msg.payload["video_note"] is True
    assert msg.attachments[0].source["file_id"] == "DQACAgUAAxkBAAIBbGZmNote"


async def test_sticker_shows_its_emoji(deliver) -> None:
    msg = only_message(await deliver("message__sticker"))
    assert msg.content_type == ContentType.STICKER
    assert msg.text == "👍"
    assert (msg.attachments[0].kind, msg.attachments[0].mime_type) == ("sticker", "image/webp")


async def test_location(deliver) -> None:
    msg = only_message(await deliver("message__location"))
    assert msg.content_type == ContentType.LOCATION
    assert msg.text == "📍 31.230416,121.473701"
    assert msg.payload["location"] == {"latitude": 31.230416, "longitude": 121.473701}


async def test_venue(deliver) -> None:
    msg = only_message(await deliver("message__venue"))
    assert msg.content_type == ContentType.LOCATION
    assert msg.text is not None and "故宫博物院" in msg.text and "北京市东城区景山前街4号" in msg.text
    assert msg.payload["venue"]["title"] == "故宫博物院"


async def test_own_contact_fills_phone(deliver) -> None:
    msg = only_message(await deliver("message__contact_own"))
    assert msg.content_type == ContentType.CONTACT_CARD
    assert msg.profile is not None and msg.profile.phone == "+8613800138000"
    assert msg.profile.name == "小明 王"


async def test_someone_elses_contact_does_not_fill_phone(deliver) -> None:
    msg = only_message(await deliver("message__contact_other"))
    assert msg.content_type == ContentType.CONTACT_CARD
    assert msg.profile is not None and msg.profile.phone is None
    assert msg.payload["contact"]["phone_number"] == "+8613911112222"
    assert msg.text == "李四 +8613911112222"


async def test_reply_links_to_replied_message(deliver) -> None:
    msg = only_message(await deliver("message__reply"))
    assert msg.reply_to_external_id == f"{CUSTOMER}:57"


async def test_start_deep_link_is_attributed(deliver) -> None:
    msg = only_message(await deliver("message__start_deeplink"))
    assert msg.payload["start_param"] == "spring_sale_2024"
    assert msg.profile is not None and dict(msg.profile.attributes) == {"source": "spring_sale_2024"}


async def test_plain_start_has_no_attribution(deliver) -> None:
    msg = only_message(await deliver("message__start_plain"))
    assert "start_param" not in msg.payload
    assert msg.profile is not None and dict(msg.profile.attributes) == {}


async def test_edited_message_is_an_edit_event_of_the_original(deliver) -> None:
    (event,) = await deliver("edited_message__text")
    assert isinstance(event, ChannelEvent)
    assert event.kind == ChannelEventKind.MESSAGE_EDITED
    assert event.external_id == f"{CUSTOMER}:101"  # same key as message__text_chinese
    assert event.data == {"text": "你好，我想咨询一下订单 #20240612 的物流状态。"}
    assert event.sender_id == CUSTOMER


async def test_callback_query_is_a_postback_and_gets_answered(deliver, bot_api: FakeBotApi,
                                                              sink: RecordingSink) -> None:
    msg = only_message(await deliver("callback_query__choice"))
    assert msg.content_type == ContentType.POSTBACK
    assert msg.external_id == "cb:4382bfdwdsb323b2d9"
    assert msg.payload["choice"] == "faq:shipping"
    assert msg.text == "物流查询"  # the label of the tapped button
    assert msg.reply_to_external_id == f"{CUSTOMER}:58"
    assert msg.sender_id == CUSTOMER
    (answer,) = bot_api.calls_of("answerCallbackQuery")
    assert answer.params["callback_query_id"] == "4382bfdwdsb323b2d9"


async def test_callback_answered_only_after_sink_stored_it(adapter, bot_api: FakeBotApi) -> None:
    from tests.channels.telegram.helpers import load_fixture, webhook_request

    seen_answers_at_sink: list[int] = []

    async def sink(items):
        seen_answers_at_sink.append(len(bot_api.calls_of("answerCallbackQuery")))
        return await RecordingSink()(items)

    await adapter.handle_webhook(webhook_request(load_fixture("callback_query__choice")), sink)
    assert seen_answers_at_sink == [0]
    assert len(bot_api.calls_of("answerCallbackQuery")) == 1


async def test_bot_blocked_marks_contact_unreachable(deliver) -> None:
    (event,) = await deliver("my_chat_member__kicked")
    assert isinstance(event, ChannelEvent)
    assert event.kind == ChannelEventKind.CONTACT_UNREACHABLE
    assert event.sender_id == CUSTOMER
    assert event.data["reason"] == "blocked the bot"


async def test_bot_unblocked_marks_contact_reachable(deliver) -> None:
    (event,) = await deliver("my_chat_member__member")
    assert isinstance(event, ChannelEvent)
    assert event.kind == ChannelEventKind.CONTACT_REACHABLE
    assert event.sender_id == CUSTOMER


async def test_group_message_ignored_by_default(deliver, sink: RecordingSink) -> None:
    assert await deliver("message__group_text") == []
    assert sink.batches == []


async def test_channel_post_ignored_by_default(deliver, sink: RecordingSink) -> None:
    assert await deliver("channel_post__text") == []


async def test_group_message_accepted_when_enabled(make_adapter, sink: RecordingSink) -> None:
    from tests.channels.telegram.helpers import load_fixture, webhook_request

    adapter = make_adapter(accept_groups=True)
    await adapter.handle_webhook(webhook_request(load_fixture("message__group_text")), sink)
    msg = only_message(sink.items)
    assert msg.sender_id == "-1001234567890"  # the group is the contact; replies go to the group
    assert msg.profile is not None and msg.profile.name == "客户交流群"
    assert msg.payload["from_id"] == 987654321
    assert msg.external_id == "-1001234567890:301"
