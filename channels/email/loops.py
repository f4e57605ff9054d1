"""Loop and bounce safety: mail we must never auto-answer, and delivery status notifications.

RFC 3834 (Auto-Submitted), RFC 2369/2919 list headers, Precedence, vendor auto-reply headers,
empty return paths; RFC 3464 DSNs (multipart/report; report-type=delivery-status).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from channels.email.headers import decode_header, parse_addresses, parse_msgids
from channels.email.parse import ParsedMail

_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon")
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status )?notification|delivery (has )?failed|returned mail|failure notice"
    r"|mail delivery (failed|system)|退信|未能送达|无法投递|投递失败",
    re.IGNORECASE,
)
_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")


def auto_submitted_reason(mail: ParsedMail) -> str | None:
    """Why this mail must never get an automatic reply, or None for a human's mail."""
    h = mail.headers
    auto = (mail.header("auto-submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    precedence = (mail.header("precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    for name in ("list-id", "list-unsubscribe"):
        if name in h:
            return f"mailing list ({name})"
    for name in ("x-autoreply", "x-autorespond"):
        if name in h:
            return f"auto-reply header {name}"
    return_path = mail.header("return-path")
    if return_path is not None and return_path.replace(" ", "") == "<>":
        return "empty return path"
    if is_daemon(mail):
        return "sent by a mail system (MAILER-DAEMON / postmaster)"
    return None


def is_daemon(mail: ParsedMail) -> bool:
    """From MAILER-DAEMON / postmaster, or an empty From address."""
    if mail.from_addr:
        return mail.from_addr.split("@", 1)[0] in _DAEMONS
    raw_from = decode_header(mail.raw_header("from") or "").lower()
    return "<>" in raw_from.replace(" ", "") or any(d in raw_from.replace(" ", "-") for d in _DAEMONS)


def is_bounce(mail: ParsedMail) -> bool:
    """A delivery report: multipart/report delivery-status, or a daemon's failure notice."""
    ctype = mail.message.get_content_type()
    if ctype == "multipart/report":
        report = str(mail.message.get_param("report-type") or "").lower()
        return report in ("delivery-status", "") or _has_part(mail.message, "message/delivery-status")
    return is_daemon(mail) and (
        "x-failed-recipients" in mail.headers or bool(_BOUNCE_SUBJECT.search(mail.subject))
    )


@dataclass(frozen=True)
class FailedDelivery:
    """One recipient's outcome from a delivery report."""

    recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # e.g. "5.1.1"
    error: str  # status plus the diagnostic text
    hard: bool


@dataclass(frozen=True)
class DeliveryReport:
    original_message_id: str | None
    envelope_id: str | None
    recipients: tuple[FailedDelivery, ...]


def _has_part(msg: Message, ctype: str) -> bool:
    return any(p.get_content_type() == ctype for p in _parts(msg))


def _parts(msg: Message, limit: int = 200) -> list[Message]:
    out: list[Message] = []
    stack = [msg]
    while stack and len(out) < limit:
        part = stack.pop()
        out.append(part)
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
    return out


def _field_blocks(part: Message) -> list[Message]:
    # Python parses message/delivery-status into a list of header blocks (per-message, per-recipient).
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def _value(block: Message, name: str) -> str:
    return decode_header(str(block.get(name, "") or ""))


def _typed_address(value: str) -> str:
    # "rfc822; user@example.com" -> "user@example.com"
    return value.split(";", 1)[-1].strip().strip("<>").lower()


def parse_delivery_report(mail: ParsedMail) -> DeliveryReport:
    """Recipients and original Message-ID of a DSN (best effort for non-standard bounces)."""
    original_id: str | None = None
    envelope_id: str | None = None
    results: list[FailedDelivery] = []
    for part in _parts(mail.message):
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            for block in _field_blocks(part):
                envelope_id = envelope_id or (_value(block, "original-envelope-id") or None)
                recipient = _value(block, "final-recipient") or _value(block, "original-recipient")
                if not recipient:
                    continue
                action = _value(block, "action").lower() or "failed"
                status_match = _STATUS.search(_value(block, "status"))
                status = status_match.group(0) if status_match else ("5.0.0" if action == "failed" else "")
                diagnostic = _value(block, "diagnostic-code").split(";", 1)[-1].strip()
                error = " ".join(x for x in (status, diagnostic or _value(block, "status")[len(status):].strip(" ()")) if x)
                results.append(_delivery(recipient, action, status, error))
        elif original_id is None and ctype in ("message/rfc822", "text/rfc822-headers"):
            original_id = _returned_message_id(part)
    if not results and mail.text:
        results = _text_report(mail.text)
    if not results:
        for _, addr in parse_addresses(mail.headers.get("x-failed-recipients", [])):
            results.append(FailedDelivery(addr, "failed", "5.0.0", "5.0.0 delivery failed", True))
    if original_id is None and mail.text:
        match = re.search(r"(?im)^\s*Message-Id:\s*(<[^>\s]+>)", mail.text)
        original_id = parse_msgids(match.group(1))[0] if match else None
    if original_id == mail.message_id:
        original_id = None  # the report's own id, not the returned mail's
    return DeliveryReport(original_id, envelope_id, tuple(results))


# Permanent failures that concern the message (content, size, policy, full mailbox), not the
# address: they must not count towards marking the contact unreachable.
_NOT_ADDRESS = ("5.2.2", "5.3.4", "5.2.3")


def _delivery(recipient: str, action: str, status: str, error: str) -> FailedDelivery:
    hard = action == "failed" and status.startswith("5.") and status not in _NOT_ADDRESS \
        and not status.startswith("5.7.")
    return FailedDelivery(_typed_address(recipient), action, status, error, hard)


_TEXT_FIELDS = re.compile(r"(?im)^\s*(Final-Recipient|Action|Status|Diagnostic-Code)\s*:\s*(.+)$")


def _text_report(text: str) -> list[FailedDelivery]:
    # A DSN whose MIME structure is broken still carries its fields as text.
    results: list[FailedDelivery] = []
    fields: dict[str, str] = {}

    def flush() -> None:
        if "final-recipient" in fields:
            action = fields.get("action", "failed").lower()
            match = _STATUS.search(fields.get("status", ""))
            status = match.group(0) if match else "5.0.0"
            diag = fields.get("diagnostic-code", "").split(";", 1)[-1].strip()
            results.append(_delivery(fields["final-recipient"], action, status, f"{status} {diag}".strip()))
        fields.clear()

    for match in _TEXT_FIELDS.finditer(text):
        name = match.group(1).lower()
        if name == "final-recipient":
            flush()
        fields[name] = match.group(2).strip()
    flush()
    return results


def _returned_message_id(part: Message) -> str | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        ids = parse_msgids(str(payload[0].get("message-id", "") or ""))
        return ids[0] if ids else None
    text = part.get_payload(decode=True)
    if isinstance(text, bytes):
        match = re.search(rb"(?im)^Message-Id:\s*(<[^>\s]+>)", text)
        if match:
            return parse_msgids(match.group(1).decode("ascii", "replace"))[0]
    return None
