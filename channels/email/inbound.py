"""ParsedMail -> what the ingest sink receives: one InboundMessage, or bounce events, or nothing.

Pure translation; storing files is the adapter's job (it passes the storage keys in).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from channels.email.headers import decode_header
from channels.email.htmltext import html_to_text, sanitize_html
from channels.email.loops import auto_submitted_reason, is_bounce, parse_delivery_report
from channels.email.parse import MailPart, ParsedMail
from channels.email.quotes import cut_html_quote, strip_quotes
from channels.email.threading import subject_token, thread_refs
from scrm.domain import (
    Attachment,
    ChannelEvent,
    ChannelEventKind,
    ContactProfile,
    ContentType,
    Inbound,
    InboundMessage,
)


@dataclass
class Translation:
    """The items for the sink, or why the mail produced none (logged by the caller)."""

    items: list[Inbound] = field(default_factory=list)
    ignored: str | None = None
    bounce: bool = False
    unroutable: str | None = None  # no sender: kept for an admin (with its raw source), not refused


def external_id(mail: ParsedMail) -> str:
    """The Message-ID, or a stable id derived from the raw bytes when the sender gave none."""
    if mail.message_id:
        return mail.message_id
    return f"{hashlib.sha256(mail.raw).hexdigest()[:40]}@no-message-id.invalid"


def attachment_kind(part: MailPart) -> str:
    """Domain attachment kind for a MIME type."""
    major = part.mime_type.split("/", 1)[0]
    return {"image": "image", "audio": "audio", "video": "video"}.get(major, "file")


def new_text(mail: ParsedMail) -> str:
    """The new part of the reply: quote containers cut from HTML, quote headers cut from text."""
    if mail.text is not None and not mail.text_from_html:
        return strip_quotes(mail.text)
    if mail.html:
        return strip_quotes(html_to_text(cut_html_quote(mail.html)) or (mail.text or ""))
    return ""


def translate_bounce(mail: ParsedMail) -> Translation:
    """Delivery status events (and unreachable contacts for hard bounces) from a DSN."""
    report = parse_delivery_report(mail)
    original = report.original_message_id or report.envelope_id
    result = Translation(bounce=True)
    for rcpt in report.recipients:
        if rcpt.action not in ("failed", "delivered"):
            continue  # delayed / relayed: the final report comes later
        status = "failed" if rcpt.action == "failed" else "delivered"
        result.items.append(ChannelEvent(
            kind=ChannelEventKind.DELIVERY_STATUS,
            sender_id=rcpt.recipient,
            external_id=original,
            occurred_at=mail.date,
            data={"status": status, "error": rcpt.error, "recipient": rcpt.recipient, "hard": rcpt.hard},
        ))
        if rcpt.hard:
            result.items.append(ChannelEvent(
                kind=ChannelEventKind.CONTACT_UNREACHABLE,
                sender_id=rcpt.recipient,
                occurred_at=mail.date,
                data={"reason": f"email bounced: {rcpt.error}", "bounce": True, "message_id": original},
            ))
    if not result.items:
        result.ignored = "delivery report without a final recipient outcome"
    return result


# Headers an admin needs to tell where an unroutable mail came from.
UNROUTABLE_HEADERS = ("from", "reply-to", "sender", "return-path", "to", "cc", "date", "message-id", "received")


def translate_unroutable(mail: ParsedMail, reason: str, raw_storage_key: str | None) -> Translation:
    """The admin's "unroutable mail" record: why, the headers as written, where the raw source is."""
    headers = {name: [decode_header(v)[:500] for v in mail.headers[name][:3]]
               for name in UNROUTABLE_HEADERS if name in mail.headers}
    event = ChannelEvent(
        kind=ChannelEventKind.UNROUTABLE,
        external_id=external_id(mail),
        occurred_at=mail.date,
        data={"reason": reason, "subject": mail.subject[:500], "headers": headers, "size": len(mail.raw),
              "raw_storage_key": raw_storage_key, "warnings": list(mail.warnings)},
    )
    return Translation(items=[event], unroutable=reason)


def precheck(mail: ParsedMail, own_address: str | None) -> Translation | None:
    """Bounces and mail that is not a customer message; None for a normal mail."""
    if is_bounce(mail):
        return translate_bounce(mail)
    if not mail.from_addr:
        return Translation(unroutable="no valid sender address (From, Reply-To, Sender and Return-Path)")
    if own_address and mail.from_addr == own_address.lower():
        return Translation(ignored="sent by this inbox itself (loop protection)")
    return None


def translate(
    mail: ParsedMail,
    *,
    own_address: str | None,
    stored: Sequence[tuple[MailPart, str]] = (),
    raw_storage_key: str | None = None,
) -> Translation:
    """Turn one parsed mail into sink items; `stored` pairs each file with its storage key."""
    early = precheck(mail, own_address)
    if early is not None:
        return translate_unroutable(mail, early.unroutable, raw_storage_key) if early.unroutable else early
    assert mail.from_addr is not None
    auto_reason = auto_submitted_reason(mail)
    payload = {
        "subject": mail.subject,
        "full_text": mail.text or "",
        "recipients": list(mail.recipients),
        "message_id": mail.message_id,
        "in_reply_to": mail.in_reply_to[0] if mail.in_reply_to else None,
        "references": list(mail.references),
        "warnings": list(mail.warnings),
        "raw_kept": raw_storage_key is not None,
    }
    if mail.html:
        payload["html"] = sanitize_html(mail.html)  # for the agent's sandboxed view, never rendered raw
        payload["text_from_html"] = mail.text_from_html
    if mail.sender_header != "from":
        payload["sender_header"] = mail.sender_header
    if mail.sender_header != "from" or mail.invalid_addresses:
        payload["raw_from"] = [decode_header(v) for v in mail.headers.get("from", [])]
    if mail.invalid_addresses:
        payload["invalid_addresses"] = list(mail.invalid_addresses)
    if raw_storage_key:
        payload["raw_storage_key"] = raw_storage_key
    if auto_reason:
        payload["auto_submitted_reason"] = auto_reason
    attachments = tuple(
        Attachment(
            kind=attachment_kind(part),
            filename=part.filename,
            mime_type=part.mime_type,
            size=len(part.data),
            storage_key=key,
            source={"inline": part.inline, "content_id": part.content_id} if part.content_id else {"inline": part.inline},
        )
        for part, key in stored
    )
    text = new_text(mail)
    content_type = ContentType.TEXT
    if not text and attachments:
        content_type = ContentType.IMAGE if attachments[0].kind == "image" else ContentType.FILE
    message = InboundMessage(
        external_id=external_id(mail),
        sender_id=mail.from_addr,
        text=text or None,
        content_type=content_type,
        attachments=attachments,
        profile=ContactProfile(name=mail.from_name or None, email=mail.from_addr),
        sent_at=mail.date,
        reply_to_external_id=mail.in_reply_to[0] if mail.in_reply_to else None,
        thread_refs=thread_refs(mail.in_reply_to, mail.references),
        conversation_hint=subject_token(mail.subject),
        payload=payload,
        auto_submitted=auto_reason is not None,
    )
    return Translation(items=[message])
