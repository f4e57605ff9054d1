"""Inbound mail -> sink items: real cpython messages, charsets, quotes, threading, loops, bounces."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from channels.email.parse import parse_mail
from scrm.domain import ChannelEvent, ChannelEventKind, InboundMessage, WebhookError, WebhookRequest

CPYTHON_DIR = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "email" / "cpython"
if not CPYTHON_DIR.is_dir():
    CPYTHON_DIR = Path("/work/shared/fixtures/email/cpython")
CPYTHON = sorted(CPYTHON_DIR.glob("msg_*.txt"))


async def ingest(adapter_factory, runtime, sink, raw: bytes, **settings):
    adapter = adapter_factory(runtime, **settings)
    result = await adapter.ingest_raw(raw, sink)
    return result, sink.items


async def one_message(adapter_factory, runtime, sink, raw: bytes) -> InboundMessage:
    _, items = await ingest(adapter_factory, runtime, sink, raw)
    assert len(items) == 1 and isinstance(items[0], InboundMessage)
    return items[0]


def test_cpython_fixtures_exist():
    assert len(CPYTHON) >= 40


@pytest.mark.parametrize("path", CPYTHON, ids=lambda p: p.name)
async def test_cpython_message_is_stored_or_recognized_or_kept(path, adapter_factory, runtime, sink, caplog):
    caplog.set_level(logging.INFO, logger="channels.email")
    result, items = await ingest(adapter_factory, runtime, sink, path.read_bytes())
    if result.ignored:
        assert not items and result.ignored in caplog.text  # ignored on purpose with a logged reason
    elif result.unroutable:  # no sender at all: kept for an admin with its raw source
        [event] = items
        assert event.kind == ChannelEventKind.UNROUTABLE
        assert runtime.storage.files[event.data["raw_storage_key"]][0] == path.read_bytes()
    elif result.bounce:
        assert items and all(isinstance(i, ChannelEvent) for i in items)
    else:
        assert len(items) == 1 and isinstance(items[0], InboundMessage)
        assert "@" in items[0].sender_id and items[0].external_id


async def test_plain_message_maps_headers(adapter_factory, runtime, sink):
    raw = (CPYTHON_DIR / "msg_01.txt").read_bytes()
    msg = await one_message(adapter_factory, runtime, sink, raw)
    assert msg.external_id == "15090.61304.110929.45684@aaa.zzz.org"
    assert msg.sender_id == "bbb@ddd.com" and msg.profile.name == "John X. Doe"
    assert msg.payload["subject"] == "This is a test message"
    assert msg.payload["recipients"] == ["bbb@zzz.org"]
    assert msg.text.startswith("Hi,")


async def test_cpython_bounce_marks_delivery_failed_and_contact_unreachable(adapter_factory, runtime, sink):
    _, items = await ingest(adapter_factory, runtime, sink, (CPYTHON_DIR / "msg_16.txt").read_bytes())
    status, unreachable = items
    assert status.kind == ChannelEventKind.DELIVERY_STATUS
    assert status.external_id == "002001c144a6$8752e060$56104586@oxy.edu"
    assert status.data["recipient"] == "jangel1@cougar.noc.ucla.edu" and status.data["status"] == "failed"
    assert unreachable.kind == ChannelEventKind.CONTACT_UNREACHABLE and unreachable.data["bounce"] is True


# --- charsets ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "subject", "text"),
    [
        ("charset__gb2312_with_gbk_chars.eml", "关于镕的订单", "朱镕基先生您好，喆和堃的订单已经发货。"),
        ("charset__gbk_base64.eml", "您好", "您好，我想查询喆的退款进度。"),
        ("charset__gb18030_four_byte.eml", "表情😀", "收到了😀谢谢€"),
        ("charset__big5_quoted_printable.eml", "請問退款", "您好，請問我的訂單什麼時候到？"),
        ("charset__koi8r.eml", "Привет", "Привет, где мой заказ?"),
        ("header__encoded_words_split_character.eml", "退款申请：订单号 12345", "请帮我处理退款。"),
        ("header__raw_utf8_subject.eml", "没有编码的主题", "正文"),
        ("malformed__wrong_charset_label.eml", "Label", "其实是UTF-8"),
    ],
)
async def test_charsets_decode_without_replacement_characters(name, subject, text, load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load(name))
    assert msg.payload["subject"] == subject
    assert msg.text == text
    assert "\ufffd" not in msg.text + subject
    assert msg.payload["warnings"] == []


async def test_gb2312_display_name_with_gbk_character(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("charset__gb2312_with_gbk_chars.eml"))
    assert msg.profile.name == "朱镕基" and msg.profile.email == "zhu@example.cn"


async def test_sender_lowercased_and_cc_recipients_listed(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("header__encoded_words_split_character.eml"))
    assert msg.sender_id == "zhang.san@example.com" and msg.profile.name == "张三"
    assert msg.payload["recipients"] == ["support@example.com", "lisi@example.com", "other@example.com"]


# --- quote stripping --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "new_part", "quoted"),
    [
        ("quote__english_on_wrote.eml", "Thanks, that solved it!", "Please restart the app."),
        ("quote__english_folded_wrote.eml", "Still broken.", "Please restart the app."),
        ("quote__gt_lines_only.eml", "Yes please, the refund is missing.", "Do you still need help?"),
        ("quote__outlook_english.eml", "Please resend the invoice.", "Here is your invoice."),
        ("quote__outlook_chinese.eml", "好的，已收到发票。", "您好，附件是发票。"),
        ("quote__gmail_chinese.eml", "谢谢，问题解决了。", "请重启应用。"),
        ("quote__qq_mail.eml", "订单号是 A123。", "请提供订单号。"),
        ("quote__html_gmail_quote.eml", "Got it, thanks!", "Please restart."),
        ("quote__html_blockquote.eml", "New answer here.", "Old text"),
        ("quote__html_outlook_divrplyfwdmsg.eml", "我已付款，请确认。", "请付款。"),
        ("quote__alternative_prefers_plain.eml", "Plain answer.", "old"),
    ],
)
async def test_quote_stripping_shows_new_part_and_keeps_full_body(
    name, new_part, quoted, load, adapter_factory, runtime, sink
):
    msg = await one_message(adapter_factory, runtime, sink, load(name))
    assert msg.text == new_part
    assert quoted in msg.payload["full_text"]


async def test_html_is_sanitized_for_the_agent(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("quote__alternative_prefers_plain.eml"))
    html = msg.payload["html"]
    assert "HTML answer." in html and "javascript:" not in html and "onclick" not in html
    sink.batches.clear()
    blockquote = await one_message(adapter_factory, runtime, sink, load("quote__html_blockquote.eml"))
    assert "<script>" not in blockquote.payload["html"]


# --- threading --------------------------------------------------------------------------------

async def test_reply_with_references_lists_thread_most_recent_first(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("thread__reply_with_references.eml"))
    assert msg.thread_refs == ("out-2@example.com", "out-1@example.com", "first@example.com")
    assert msg.conversation_hint == 77
    assert msg.payload["in_reply_to"] == "out-2@example.com"
    assert msg.reply_to_external_id == "out-2@example.com"


async def test_reply_without_references_uses_in_reply_to(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("thread__reply_without_references.eml"))
    assert msg.thread_refs == ("out-2@example.com",) and msg.conversation_hint is None


async def test_subject_token_only(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("thread__subject_token_only.eml"))
    assert msg.thread_refs == () and msg.conversation_hint == 1042


async def test_changed_subject_keeps_thread_refs(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("thread__changed_subject.eml"))
    assert msg.thread_refs[0] == "out-2@example.com" and msg.payload["subject"] == "Completely new topic"


async def test_reply_from_other_person_carries_addressing(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("thread__reply_from_other_person.eml"))
    assert msg.sender_id == "carol@example.com"
    assert msg.thread_refs[0] == "out-2@example.com"
    # ingest joins Carol only because the thread is addressed to the inbox / the contact
    assert msg.payload["recipients"] == ["support@example.com", "ann@example.com"]


async def test_missing_message_id_gets_stable_synthetic_id(load, adapter_factory, runtime, sink):
    first = await one_message(adapter_factory, runtime, sink, load("malformed__no_message_id.eml"))
    sink.batches.clear()
    second = await one_message(adapter_factory, runtime, sink, load("malformed__no_message_id.eml"))
    assert first.external_id == second.external_id and first.external_id.endswith(".invalid")


# --- loops and bounces ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "auto"),
    [
        ("loop__auto_submitted.eml", True),
        ("loop__auto_submitted_no.eml", False),
        ("loop__precedence_bulk.eml", True),
        ("loop__list_unsubscribe.eml", True),
        ("loop__x_autoreply.eml", True),
        ("loop__empty_return_path.eml", True),
        ("loop__from_postmaster.eml", True),
        ("quote__english_on_wrote.eml", False),
    ],
)
async def test_machine_mail_is_never_auto_answered(name, auto, load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load(name))
    assert msg.auto_submitted is auto


async def test_own_mail_is_dropped(load, adapter_factory, runtime, sink):
    result, items = await ingest(adapter_factory, runtime, sink, load("loop__own_address.eml"))
    assert items == [] and "loop" in result.ignored


async def test_hard_bounce_dsn(load, adapter_factory, runtime, sink):
    _, items = await ingest(adapter_factory, runtime, sink, load("dsn__hard_bounce.eml"))
    status, unreachable = items
    assert status.external_id == "171000.42.abc@example.com"
    assert status.data == {
        "status": "failed",
        "error": "5.1.1 550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown",
        "recipient": "gone@example.org",
        "hard": True,
    }
    assert unreachable.kind == ChannelEventKind.CONTACT_UNREACHABLE
    assert unreachable.sender_id == "gone@example.org" and unreachable.data["bounce"] is True


async def test_mailbox_full_is_failed_but_not_unreachable(load, adapter_factory, runtime, sink):
    _, items = await ingest(adapter_factory, runtime, sink, load("dsn__mailbox_full.eml"))
    assert [i.kind for i in items] == [ChannelEventKind.DELIVERY_STATUS]
    assert items[0].data["hard"] is False and items[0].external_id == "full-1@example.com"


async def test_delayed_dsn_is_not_a_failure(load, adapter_factory, runtime, sink):
    result, items = await ingest(adapter_factory, runtime, sink, load("dsn__delayed.eml"))
    assert items == [] and result.bounce


async def test_exim_bounce_without_dsn_part(load, adapter_factory, runtime, sink):
    _, items = await ingest(adapter_factory, runtime, sink, load("dsn__exim_x_failed_recipients.eml"))
    assert items[0].data["recipient"] == "nobody@example.org"
    assert items[0].external_id == "exim-orig@example.com"


# --- files and bad input ----------------------------------------------------------------------

async def test_attachments_and_inline_images_go_to_storage(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("attachment__inline_image_and_pdf.eml"))
    image, pdf = msg.attachments
    assert image.kind == "image" and image.source["inline"] and image.source["content_id"] == "img1@example.com"
    assert pdf.filename == "发票.pdf" and pdf.mime_type == "application/pdf"
    assert runtime.storage.files[pdf.storage_key][0] == b"%PDF-1.4 fake"
    assert runtime.storage.files[image.storage_key][0].startswith(b"\x89PNG")
    assert msg.text == "See photo"


async def test_broken_base64_is_kept_with_warning_and_raw_source(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("malformed__broken_base64.eml"))
    assert any("base64" in w for w in msg.payload["warnings"])
    assert msg.payload["raw_kept"] is True
    assert runtime.storage.files[msg.payload["raw_storage_key"]][0] == load("malformed__broken_base64.eml")


async def test_unknown_charset_is_kept_with_warning(load, adapter_factory, runtime, sink):
    msg = await one_message(adapter_factory, runtime, sink, load("malformed__unknown_charset.eml"))
    assert msg.text.startswith("caf") and msg.payload["warnings"] and msg.payload["raw_kept"]


async def test_absurd_nesting_does_not_crash(adapter_factory, runtime, sink):
    depth = 400
    head = "From: a@example.com\nMessage-ID: <deep@example.com>\nSubject: deep\n"
    body = ""
    for i in range(depth):
        body += f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n'
    body += "Content-Type: text/plain\n\ninnermost\n"
    for i in reversed(range(depth)):
        body += f"--b{i}--\n"
    result, items = await ingest(adapter_factory, runtime, sink, (head + body).encode())
    assert len(items) == 1 and any("nesting" in w for w in items[0].payload["warnings"])


async def test_huge_mail_keeps_text_but_not_files(load, adapter_factory, runtime, sink):
    raw = load("attachment__inline_image_and_pdf.eml")
    result, items = await ingest(adapter_factory, runtime, sink, raw, max_message_bytes=len(raw) - 1)
    assert items[0].attachments == () and any("size limit" in w for w in items[0].payload["warnings"])


def test_parse_never_raises_on_garbage():
    for raw in (b"", b"\x00\xff" * 100, b"From: \n\n", b"Content-Type: multipart/mixed\n\n--x\n"):
        parse_mail(raw)


async def test_webhook_is_not_found(adapter_factory, sink):
    adapter = adapter_factory()
    request = WebhookRequest(method="POST", path="/", query={}, headers={}, body=b"")
    with pytest.raises(WebhookError) as err:
        await adapter.handle_webhook(request, sink)
    assert err.value.status == 404
