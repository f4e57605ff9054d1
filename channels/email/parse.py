"""Raw RFC 5322 bytes -> ParsedMail: decoded headers, the body text, the files. Never raises.

Uses the stdlib parser with `policy.default` for the MIME structure, but reads headers through
headers.py (charset-robust) and walks the tree iteratively with a depth limit so hostile nesting
cannot exhaust the stack.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any

from channels.email.charsets import decode_text
from channels.email.headers import decode_header, parse_addresses, parse_msgids
from channels.email.htmltext import html_to_text

MAX_DEPTH = 25  # MIME nesting beyond this is ignored (real mail rarely exceeds 6)


_DEFECTS = {
    "InvalidBase64PaddingDefect": "broken base64 (bad padding)",
    "InvalidBase64CharactersDefect": "broken base64 (invalid characters)",
    "InvalidBase64LengthDefect": "broken base64 (truncated)",
    "StartBoundaryNotFoundDefect": "multipart boundary not found",
    "CloseBoundaryNotFoundDefect": "multipart end boundary missing",
    "NoBoundaryInMultipartDefect": "multipart without boundary",
    "MissingHeaderBodySeparatorDefect": "missing blank line after headers",
}


@lru_cache(maxsize=2048)
def _parsed_header(name: str, value: str) -> Any:
    return email.policy.default.header_fetch_parse(name, value)


class _CachingPolicy(EmailPolicy):
    """policy.default, but each distinct header is parsed once.

    The parser and get_content_type() re-read Content-Type many times per part, and the header
    registry re-parses on every access; header objects are immutable, so caching them is safe.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        return _parsed_header(name, value)


POLICY = _CachingPolicy()


@dataclass
class MailPart:
    """A file (attachment or inline image) found in the mail."""

    data: bytes
    mime_type: str
    filename: str | None
    inline: bool = False
    content_id: str | None = None


@dataclass
class ParsedMail:
    """One mail with everything an adapter needs, decoded."""

    raw: bytes
    message: Message
    headers: dict[str, list[str]]
    subject: str = ""
    from_name: str = ""
    from_addr: str | None = None
    recipients: list[str] = field(default_factory=list)
    message_id: str | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    date: datetime | None = None
    text: str | None = None  # whole plain-text body (or text rendered from HTML)
    html: str | None = None  # the HTML body as sent (unsanitized)
    text_from_html: bool = False  # no text/plain body: `text` was rendered from `html`
    parts: list[MailPart] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """First value of a header, decoded; None if absent."""
        values = self.headers.get(name.lower())
        return decode_header(values[0]) if values else None

    def raw_header(self, name: str) -> str | None:
        """First raw value of a header (unfolded is up to the caller)."""
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def warn(self, text: str) -> None:
        """Record a decoding problem once; shown to the agent with the message."""
        if text not in self.warnings:
            self.warnings.append(text)


def _content_type(part: Message) -> tuple[str, dict[str, Any]]:
    try:
        header = part.get("content-type")
        if header is None:
            return part.get_default_type(), {}
        ctype = header.content_type  # type: ignore[union-attr]
        params = dict(header.params)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - malformed header: RFC 2045 default
        return "text/plain", {}
    return ctype.lower(), params


def _disposition(part: Message) -> tuple[str | None, str | None]:
    try:
        header = part.get("content-disposition")
        disp = header.content_disposition if header is not None else None  # type: ignore[union-attr]
        name = header.params.get("filename") if header is not None else None  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001
        disp, name = None, None
    return disp, name


def _payload_bytes(part: Message, mail: ParsedMail) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:  # noqa: BLE001
        mail.warn(f"could not decode a part: {exc}")
        return b""
    if isinstance(data, bytes):
        return data
    return b""


class _Collector:
    """Walks the MIME tree and sorts leaves into body text, HTML and files."""

    def __init__(self, mail: ParsedMail) -> None:
        self.mail = mail
        self.plain: list[str] = []
        self.html: list[str] = []

    def collect(self, root: Message) -> None:
        stack: list[tuple[Message, int]] = [(root, 0)]
        while stack:
            part, depth = stack.pop()
            if depth > MAX_DEPTH:
                self.mail.warn(f"MIME nesting deeper than {MAX_DEPTH}; inner parts were not read")
                continue
            ctype, params = _content_type(part)
            if ctype.startswith("message/"):
                self._message_part(part, ctype)
            elif ctype.startswith("multipart/") and not part.is_multipart():
                # Boundary missing or wrong: show the raw text rather than lose the mail.
                self.mail.warn("multipart structure unreadable; shown as plain text")
                self._leaf(part, "text/plain", params)
            elif part.is_multipart():
                children = part.get_payload()
                if not isinstance(children, list):
                    continue
                if ctype == "multipart/alternative":
                    children = [self._choose_alternative(children)]
                stack.extend((child, depth + 1) for child in reversed(children))
            else:
                self._leaf(part, ctype, params)
            for defect in getattr(part, "defects", ()):
                self.mail.warn(f"malformed MIME: {_DEFECTS.get(type(defect).__name__, type(defect).__name__)}")

    def _choose_alternative(self, children: list[Message]) -> Message:
        # Prefer text/plain; keep the HTML alternative for the agent's rich view.
        plain = None
        for child in children:
            ctype = _content_type(child)[0]
            if ctype == "text/html" and self.mail.html is None:
                data = _payload_bytes(child, self.mail)
                self.mail.html = decode_text(data, _content_type(child)[1].get("charset"))[0]
            if ctype == "text/plain" and plain is None:
                plain = child
        return plain or children[-1]

    def _message_part(self, part: Message, ctype: str) -> None:
        if ctype != "message/rfc822":
            return  # delivery-status & co are read by loops.py, not shown as files
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            inner = inner[0]
        try:
            data = inner.as_bytes() if isinstance(inner, Message) else _payload_bytes(part, self.mail)
            subject = decode_header(str(inner.get("subject", ""))) if isinstance(inner, Message) else ""
        except Exception as exc:  # noqa: BLE001
            self.mail.warn(f"could not read an attached message: {exc}")
            return
        name = (subject or "message")[:80] + ".eml"
        self.mail.parts.append(MailPart(data=data, mime_type="message/rfc822", filename=name))

    def _leaf(self, part: Message, ctype: str, params: dict[str, Any]) -> None:
        disposition, filename = _disposition(part)
        if filename is None and "name" in params:
            filename = params["name"]
        filename = decode_header(str(filename)) if filename else None
        is_body = ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename
        data = _payload_bytes(part, self.mail)
        if is_body:
            text, warning = decode_text(data, params.get("charset"))
            if warning:
                self.mail.warn(warning)
            (self.plain if ctype == "text/plain" else self.html).append(text)
            return
        cid = part.get("content-id")
        content_id = parse_msgids(str(cid))[0] if cid and parse_msgids(str(cid)) else None
        self.mail.parts.append(
            MailPart(
                data=data,
                mime_type=ctype,
                filename=filename,
                inline=disposition == "inline" or (disposition is None and content_id is not None),
                content_id=content_id,
            )
        )


def _read_headers(msg: Message) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        headers.setdefault(name.lower(), []).append(str(value))
    return headers


def parse_mail(raw: bytes) -> ParsedMail:
    """Parse one mail. Problems become `warnings`; the call itself does not fail on bad input."""
    msg = email.message_from_bytes(raw, _class=EmailMessage, policy=POLICY)
    headers = _read_headers(msg)
    mail = ParsedMail(raw=raw, message=msg, headers=headers)
    mail.subject = mail.header("subject") or ""
    senders = parse_addresses(headers.get("from", []))
    if senders:
        mail.from_name, mail.from_addr = senders[0]
    seen: set[str] = set()
    for _, addr in parse_addresses(headers.get("to", []) + headers.get("cc", [])):
        if addr not in seen:
            seen.add(addr)
            mail.recipients.append(addr)
    ids = parse_msgids(mail.raw_header("message-id"))
    mail.message_id = ids[0] if ids else None
    mail.in_reply_to = parse_msgids(mail.raw_header("in-reply-to"))
    mail.references = parse_msgids(" ".join(headers.get("references", [])))
    date = mail.raw_header("date")
    if date:
        try:
            mail.date = parsedate_to_datetime(decode_header(date))
        except (TypeError, ValueError, IndexError):
            mail.warn(f"unreadable Date header: {decode_header(date)[:80]}")
    collector = _Collector(mail)
    try:
        collector.collect(msg)
    except RecursionError:
        mail.warn("MIME structure too deep to read")
    if collector.plain:
        mail.text = "\n\n".join(t.strip("\r\n") for t in collector.plain)
    if collector.html and mail.html is None:
        mail.html = "\n".join(collector.html)
    if mail.text is None and mail.html is not None:
        mail.text = html_to_text(mail.html)
        mail.text_from_html = True
    return mail
