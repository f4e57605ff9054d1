"""Outbound mail building and a real local SMTP round trip (aiosmtplib -> our aiosmtpd receiver)."""

from __future__ import annotations

import email
import email.policy

import aiosmtplib
import pytest

from channels.email.outbound import build_message
from scrm.domain import (
    Attachment,
    Choice,
    InboundMessage,
    OutboundMessage,
    PermanentSendError,
    TransientSendError,
)


def outbound(**kw) -> OutboundMessage:
    base = dict(delivery_id=1, idempotency_key="k1", inbox_id=1, recipient_id="ann@example.com",
                text="您好，退款已处理。", conversation_id=1042)
    base.update(kw)
    return OutboundMessage(**base)


def test_reply_headers(adapter_factory):
    adapter = adapter_factory()
    msg = build_message(adapter.settings, outbound(
        automatic=True,
        metadata={"subject": "Re: 退款", "in_reply_to": "<abc@customer.com>", "references": ["first@customer.com"]},
    ))
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Re: [#1042] 退款"
    assert parsed["From"].addresses[0].display_name == "客服 Support"
    assert parsed["From"].addresses[0].addr_spec == "support@example.com"
    assert parsed["In-Reply-To"] == "<abc@customer.com>"
    assert parsed["References"] == "<first@customer.com> <abc@customer.com>"
    assert parsed["Message-ID"].endswith("@example.com>")
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed.get_content().strip() == "您好，退款已处理。"


def test_first_mail_keeps_subject_and_adds_token(adapter_factory):
    msg = build_message(adapter_factory().settings, outbound(metadata={"subject": "Your order"}))
    assert msg["Subject"] == "[#1042] Your order" and msg["Auto-Submitted"] is None
    assert msg["In-Reply-To"] is None


def test_choices_become_numbered_text(adapter_factory):
    msg = build_message(adapter_factory().settings, outbound(text="选择", choices=(Choice("退款", "refund"),)))
    assert "1. 退款" in msg.get_content()


async def test_smtp_round_trip(adapter_factory, runtime, sink, port):
    receiving = adapter_factory(address="inbox@example.org", receive_smtp=True, smtp_listen_port=port,
                                allowed_recipients=["ann@example.com"])
    sending = adapter_factory(runtime, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
    pdf_key = await runtime.storage.save(b"%PDF fake", filename="发票.pdf", mime_type="application/pdf")
    poller = receiving.poll(sink)
    await anext(poller)  # starts the SMTP listener
    try:
        result = await sending.send(outbound(
            metadata={"subject": "退款", "in_reply_to": "abc@customer.com", "references": "<first@customer.com>"},
            attachments=(Attachment(kind="file", filename="发票.pdf", mime_type="application/pdf", storage_key=pdf_key),),
        ))
    finally:
        await poller.aclose()
    (item,) = sink.items
    assert isinstance(item, InboundMessage)
    assert item.external_id == result.external_id and "@example.com" in result.external_id
    assert item.sender_id == "support@example.com" and item.profile.name == "客服 Support"
    assert item.payload["subject"] == "Re: [#1042] 退款" and item.conversation_hint == 1042
    assert item.payload["in_reply_to"] == "abc@customer.com"
    assert item.thread_refs == ("abc@customer.com", "first@customer.com")
    assert item.text == "您好，退款已处理。"
    assert item.attachments[0].filename == "发票.pdf"


async def start_receiver(adapter_factory, sink, port, **settings):
    adapter = adapter_factory(address="inbox@example.org", smtp_listen_port=port, **settings)
    receiver = adapter.smtp_receiver(sink)
    await receiver.start()
    return receiver


async def test_recipient_not_allowed_is_refused_permanently(adapter_factory, sink, port):
    receiver = await start_receiver(adapter_factory, sink, port)
    try:
        sender = adapter_factory(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
        with pytest.raises(PermanentSendError) as err:
            await sender.send(outbound(recipient_id="stranger@example.net"))
        assert err.value.code == "550" and err.value.contact_unreachable
    finally:
        await receiver.stop()
    assert sink.items == []


async def test_sink_failure_answers_451_so_sender_retries(adapter_factory, sink, port):
    receiver = await start_receiver(adapter_factory, sink, port)
    sink.fail = 1
    try:
        sender = adapter_factory(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
        with pytest.raises(TransientSendError) as err:
            await sender.send(outbound(recipient_id="inbox@example.org"))
        assert err.value.code == "451"
        await sender.send(outbound(recipient_id="inbox@example.org"))  # the retry is stored
    finally:
        await receiver.stop()
    assert len(sink.items) == 1


async def test_too_big_is_refused_with_552(adapter_factory, sink, port):
    receiver = await start_receiver(adapter_factory, sink, port, max_message_bytes=2000)
    try:
        with pytest.raises(aiosmtplib.SMTPResponseException) as err:
            await aiosmtplib.send(b"From: a@example.com\r\n\r\n" + b"x" * 5000, sender="a@example.com",
                                  recipients=["inbox@example.org"], hostname="127.0.0.1", port=port,
                                  start_tls=False)
        assert err.value.code == 552
    finally:
        await receiver.stop()
    assert sink.items == []


async def test_mail_without_from_is_stored_with_the_envelope_sender(adapter_factory, sink, port):
    receiver = await start_receiver(adapter_factory, sink, port)
    try:
        await aiosmtplib.send(b"Subject: no from\r\nMessage-ID: <nofrom@example.com>\r\n\r\nbody\r\n",
                              sender="a@example.com", recipients=["inbox@example.org"], hostname="127.0.0.1",
                              port=port, start_tls=False)  # 250: accepted, not refused with 550
    finally:
        await receiver.stop()
    [item] = sink.items
    assert isinstance(item, InboundMessage) and item.sender_id == "a@example.com"
    assert item.payload["sender_header"] == "return-path" and item.text == "body"


async def test_mail_without_any_sender_is_kept_as_unroutable(adapter_factory, runtime, sink, port):
    from scrm.domain import ChannelEventKind

    receiver = adapter_factory(runtime, address="inbox@example.org", smtp_listen_port=port).smtp_receiver(sink)
    await receiver.start()
    raw = b"Subject: nobody\r\nMessage-ID: <nobody@example.com>\r\n\r\nwho am I\r\n"
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
            await smtp.mail("")  # the null envelope sender, and no From: still 250
            await smtp.rcpt("inbox@example.org")
            code, _ = await smtp.data(raw)
        assert code == 250
    finally:
        await receiver.stop()
    [event] = sink.items
    assert event.kind == ChannelEventKind.UNROUTABLE and event.external_id == "nobody@example.com"
    kept = runtime.storage.files[event.data["raw_storage_key"]][0]
    assert kept.startswith(b"Return-Path: <>\r\n") and kept.endswith(raw)


async def test_connection_refused_is_transient(adapter_factory, port):
    sender = adapter_factory(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, smtp_timeout=2)
    with pytest.raises(TransientSendError):
        await sender.send(outbound())


async def test_invalid_recipient_is_permanent(adapter_factory, port):
    sender = adapter_factory(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
    with pytest.raises(PermanentSendError):
        await sender.send(outbound(recipient_id="not an address"))
