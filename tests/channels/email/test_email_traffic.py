"""Real-world mail classes (issue 18): one regression test per class, on our own fixtures."""

from __future__ import annotations

import binascii

import pytest

from channels.email.charsets import decode_text
from channels.email.headers import decode_header, parse_mailboxes
from channels.email.parse import parse_mail
from channels.email.recovery import is_stub
from scrm.domain import ChannelEventKind, InboundMessage

EXPORT = b"Order export\nA778,2,59.00\nA779,1,19.90\n" * 3  # what the uuencode fixtures carry


async def stored(adapter_factory, runtime, sink, raw: bytes) -> InboundMessage:
    await adapter_factory(runtime).ingest_raw(raw, sink)
    [msg] = sink.items
    assert isinstance(msg, InboundMessage)
    return msg


# --- 1. headers after junk lines, and the sender fallback -------------------------------------------

async def test_garbage_line_before_headers_is_skipped_and_the_raw_source_kept(load, adapter_factory, runtime, sink):
    msg = await stored(adapter_factory, runtime, sink, load("header__garbage_line_before_headers.eml"))
    assert msg.sender_id == "bob.zhang@example.net" and msg.external_id == "garbage-1@example.net"
    assert "1 line(s) before the headers were skipped" in msg.payload["warnings"]
    assert runtime.storage.files[msg.payload["raw_storage_key"]][0] == load("header__garbage_line_before_headers.eml")


def test_an_mbox_from_line_is_normal_not_a_warning(load):
    mail = parse_mail(load("header__mbox_from_line.eml"))
    assert mail.from_addr == "ann@example.com" and mail.warnings == []
    assert mail.skipped_lines[0].startswith("From ann@example.com")


@pytest.mark.parametrize(("name", "header", "address"), [
    ("sender__reply_to_only.eml", "reply-to", "lisi@example.cn"),
    ("sender__sender_only.eml", "sender", "forms@shop.example.com"),
    ("sender__return_path_only.eml", "return-path", "erin@example.com"),
    ("sender__invalid_from_with_reply_to.eml", "reply-to", "frank@example.com"),
    ("address__unbalanced_quote.eml", "return-path", "grace.h@example.com"),
])
async def test_sender_falls_back_from_reply_to_sender_return_path(name, header, address, load, adapter_factory,
                                                                  runtime, sink):
    msg = await stored(adapter_factory, runtime, sink, load(name))
    assert (msg.sender_id, msg.payload["sender_header"]) == (address, header)
    assert any(header.title() in w for w in msg.payload["warnings"])  # the agent sees where the address came from


async def test_mail_without_any_sender_is_kept_as_unroutable_with_its_headers(load, adapter_factory, runtime, sink):
    result = await adapter_factory(runtime).ingest_raw(load("address__space_in_address.eml"), sink)
    [event] = sink.items
    assert result.unroutable and event.kind == ChannelEventKind.UNROUTABLE
    assert event.data["headers"]["from"] == ["test test@example.com"]  # the raw header, for the admin
    assert event.data["subject"] == "spaced" and event.sender_id is None and event.profile is None


# --- 4. invalid addresses ------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["test test@example.com", '"Grace <grace@example.com>', "heidi@example.com>",
                                   "not an address", "foo@localhost", "<>"])
def test_invalid_addresses_are_never_contacts(value):
    assert parse_mailboxes([value]).valid == []


async def test_invalid_from_keeps_the_raw_header_for_the_agent(load, adapter_factory, runtime, sink):
    msg = await stored(adapter_factory, runtime, sink, load("sender__invalid_from_with_reply_to.eml"))
    assert msg.profile.email == "frank@example.com"
    assert msg.payload["raw_from"] == ["test test@example.com"]
    assert msg.payload["invalid_addresses"] == ["test test@example.com"]


def test_invalid_recipients_are_dropped_and_reported(load):
    mail = parse_mail(load("address__trailing_bracket.eml"))
    assert mail.recipients == ["support@example.com", "ivan@example.com"]
    assert {"heidi@example.com>", "not an address", "judy@example.com>"} <= set(mail.invalid_addresses)


def test_encoded_word_with_a_comma_is_one_display_name(load):
    boxes = parse_mailboxes(["=?utf-8?Q?Doe,_John?= <john.doe@example.com>, ann@example.com"])
    assert boxes.valid == [("Doe, John", "john.doe@example.com"), ("", "ann@example.com")]
    assert parse_mail(load("address__encoded_comma_display_name.eml")).from_name == "Doe, John"


# --- 2. encodings --------------------------------------------------------------------------------

def test_iso_2022_jp_goes_through_its_charset_even_though_it_is_7_bit(load):
    mail = parse_mail(load("charset__iso2022jp.eml"))
    assert (mail.from_name, mail.subject) == ("山田太郎", "注文について")
    assert mail.text == "お世話になっております。注文の件でご連絡しました。"
    assert parse_mail(load("charset__iso2022jp_raw_subject.eml")).subject == "注文の確認"


@pytest.mark.parametrize(("text", "codec"), [
    ("お世話になっております。先日注文した商品がまだ届いておりません。", "shift_jis"),
    ("Grüße aus München, die Bestellung ist noch nicht da. äöüß", "latin-1"),
    ("Bonjour, où est ma commande ? Je l'attends depuis déjà deux semaines.", "latin-1"),
    ("您好，我的订单还没有收到，请帮忙查询一下物流。", "gbk"),
    ("Здравствуйте, где мой заказ? Спасибо.", "koi8-r"),
])
def test_undeclared_8_bit_text_is_detected_not_guessed_as_gb18030(text, codec):
    decoded, warning = decode_text(text.encode(codec), None)
    assert decoded == text and warning and "detected" in warning


def test_wrong_label_falls_back_to_detection_and_gb_labels_stay_gb18030():
    text = "Merci, où en est ma commande ? Déjà payée la semaine dernière."
    assert decode_text(text.encode("latin-1"), "utf-8")[0] == text
    assert decode_text("朱镕基喆".encode("gb18030"), "GB2312") == ("朱镕基喆", None)
    assert decode_text("朱镕基喆".encode("gb18030"), "gbk") == ("朱镕基喆", None)


def test_rfc2047_words_with_spaces_and_split_characters():
    assert decode_header("=?us-ascii?Q?ABC / 123?=") == "ABC / 123"
    split = "=?utf-8?B?6YCA?= =?utf-8?B?5qy+?="  # "退款" cut between its two characters' bytes
    assert decode_header(split) == "退款"


@pytest.mark.parametrize("name", ["attachment__x_uuencode.eml", "attachment__x_uuencode_without_begin.eml",
                                  "attachment__uuencode_in_body.eml"])
async def test_uuencoded_files_are_stored_decoded(name, load, adapter_factory, runtime, sink):
    msg = await stored(adapter_factory, runtime, sink, load(name))
    [att] = msg.attachments
    assert att.filename == "export.csv" and runtime.storage.files[att.storage_key][0] == EXPORT
    assert "begin 644" not in (msg.text or "") and "M3W)D" not in (msg.text or "")


def test_uu_data_round_trip():
    from channels.email.uu import decode_uu

    lines = b"".join(binascii.b2a_uu(EXPORT[i:i + 45]) for i in range(0, len(EXPORT), 45))
    assert decode_uu(b"begin 600 a.bin\n" + lines + b"`\nend\n") == (EXPORT, "a.bin")


async def test_attached_message_file_name_is_its_decoded_subject(load, adapter_factory, runtime, sink):
    msg = await stored(adapter_factory, runtime, sink, load("attachment__forwarded_message_encoded_subject.eml"))
    [att] = msg.attachments
    assert att.filename == "订单确认 #A778.eml" and att.mime_type == "message/rfc822"


# --- 3. which part is the message ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["alternative__empty_plain.eml", "alternative__see_html_stub.eml",
                                  "alternative__short_plain.eml", "alternative__related_html_chinese_stub.eml"])
async def test_stub_plain_part_gives_way_to_the_sanitized_html_text(name, load, adapter_factory, runtime, sink):
    msg = await stored(adapter_factory, runtime, sink, load(name))
    assert msg.payload["text_from_html"] is True and len(msg.text) > 40
    html = msg.payload["html"]
    assert "<script" not in html and "alert(1)" not in (msg.text or "")  # sanitized for the agent's view


async def test_a_real_plain_part_stays_the_text_and_the_html_is_kept(load, adapter_factory, runtime, sink):
    msg = await stored(adapter_factory, runtime, sink, load("quote__alternative_prefers_plain.eml"))
    assert msg.text == "Plain answer." and msg.payload["text_from_html"] is False
    assert "HTML answer." in msg.payload["html"]


def test_stub_rules():
    html = "Dear team, the blender I bought last week stopped working after two days and makes a noise. " * 2
    assert is_stub("", html) and is_stub("See the HTML version of this message.", html)
    assert is_stub("请使用支持HTML的邮件客户端查看", "x") and is_stub("Dear team,", html)
    assert not is_stub("Dear team, the blender stopped working after two days.", html)
    assert not is_stub("Thanks!", "<p>Thanks!</p>")


@pytest.mark.parametrize("raw", [
    b"From: a@example.com\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 a\n\xe4\xe4\xff\nend\n",
    b"From: a@example.com\nSubject: =?utf-8?B?5L2g\xe4?= =?utf-8?B?5aW9?=\n\nx\n",
    b"From: a:b;c, <x@y.z>\nReply-To: <>\nSubject: =?iso-2022-jp?B?GyRC?=\n\nx\n",
])
def test_hostile_headers_and_encodings_never_crash_the_parser(raw):
    mail = parse_mail(raw)  # found by mutating our fixtures; each one raised before
    assert mail.raw == raw
