"""Raw RFC 5322 bytes -> ParsedMail: decoded headers, the body text, the files. Never raises.

Uses the stdlib parser with `policy.default` for the MIME structure, but reads headers through
headers.py (charset-robust) and walks the tree iteratively with a depth limit so hostile nesting
cannot exhaust the stack.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import ContentDispositionHeader, ContentTypeHeader
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, cast

from channels.email.charsets import decode_text
from channels.email.headers import decode_header, parse_mailboxes, parse_msgids
from channels.email.htmltext import html_to_text
from channels.email.recovery import find_sender, is_stub, might_be_stub, skip_leading_junk
from channels.email.uu import UU_ENCODINGS, decode_uu, extract_blocks

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
    text_from_html: bool = False  # no usable text/plain body: `text` was rendered from `html`
    parts: list[MailPart] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sender_header: str | None = None  # the header the sender came from (recovery.SENDER_HEADERS)
    invalid_addresses: list[str] = field(default_factory=list)  # as written, never made contacts
    skipped_lines: list[str] = field(default_factory=list)  # junk before the headers

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
        # policy.default parses headers into header objects; typeshed types Message headers as str.
        header = cast("ContentTypeHeader | None", part.get("content-type"))
        if header is None:
            return part.get_default_type(), {}
        ctype = header.content_type
        params = dict(header.params)
    except Exception:  # noqa: BLE001 - malformed header: RFC 2045 default
        return "text/plain", {}
    return ctype.lower(), params


def _disposition(part: Message) -> tuple[str | None, str | None]:
    try:
        header = cast("ContentDispositionHeader | None", part.get("content-disposition"))
        disp = header.content_disposition if header is not None else None
        name = header.params.get("filename") if header is not None else None
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
        self.html_body = False  # an alternative's HTML part carries the message (stub plain part)

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
                parts = cast("list[Message]", children)  # a multipart's payload: its sub-messages
                if ctype == "multipart/alternative":
                    parts = [self._choose_alternative(parts)]
                stack.extend((child, depth + 1) for child in reversed(parts))
            else:
                self._leaf(part, ctype, params)
            for defect in getattr(part, "defects", ()):
                self.mail.warn(f"malformed MIME: {_DEFECTS.get(type(defect).__name__, type(defect).__name__)}")

    def _choose_alternative(self, children: list[Message]) -> Message:
        """The part that holds the message: text/plain, unless it is a stub of the HTML one.

        The HTML alternative is always kept (sanitized later) for the agent's rich view.
        """
        plain = html_part = None
        for child in children:
            ctype = _content_type(child)[0]
            if ctype == "text/plain" and plain is None and _disposition(child)[0] != "attachment":
                plain = child
            elif html_part is None and (ctype == "text/html" or ctype.startswith("multipart/")):
                html_part = child if ctype == "text/html" else (_find_html(child) and child)
        if html_part is None:
            return plain or children[-1]
        html_leaf = html_part if _content_type(html_part)[0] == "text/html" else _find_html(html_part)
        if html_leaf is not None and self.mail.html is None:
            data = _payload_bytes(html_leaf, self.mail)
            self.mail.html = decode_text(data, _content_type(html_leaf)[1].get("charset"))[0]
        if plain is None:
            return html_part
        plain_text = decode_text(_payload_bytes(plain, self.mail), _content_type(plain)[1].get("charset"))[0]
        html = self.mail.html
        if html is not None and might_be_stub(plain_text, html) and is_stub(plain_text, html_to_text(html)):
            self.mail.warn("the plain-text part is only a stub; the text is taken from the HTML part")
            self.html_body = True
            return html_part
        return plain

    def _message_part(self, part: Message, ctype: str) -> None:
        if ctype != "message/rfc822":
            return  # delivery-status & co are read by loops.py, not shown as files
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            inner = inner[0]
        try:
            if isinstance(inner, Message):
                data = inner.as_bytes()
                raw_subject = next((str(v) for k, v in inner.raw_items() if k.lower() == "subject"), "")
            else:  # an encoded (base64) attached message: read its headers from the decoded bytes
                data = _payload_bytes(part, self.mail)
                head = email.message_from_bytes(data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0],
                                                policy=email.policy.compat32)
                raw_subject = str(head.get("subject", "") or "")
        except Exception as exc:  # noqa: BLE001
            self.mail.warn(f"could not read an attached message: {exc}")
            return
        subject = _SAFE_NAME.sub("_", decode_header(raw_subject)).strip(" ._")
        name = (subject or "message")[:80] + ".eml"
        self.mail.parts.append(MailPart(data=data, mime_type="message/rfc822", filename=name))

    def _leaf(self, part: Message, ctype: str, params: dict[str, Any]) -> None:
        disposition, filename = _disposition(part)
        if filename is None and "name" in params:
            filename = params["name"]
        filename = decode_header(str(filename)) if filename else None
        cte = str(part.get("content-transfer-encoding", "") or "").strip().lower()
        if cte in UU_ENCODINGS:
            raw = part.get_payload(decode=False)
            encoded = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
            data, uu_name = decode_uu(encoded)
            filename = filename or (decode_header(uu_name) if uu_name else None)
            if ctype == "text/plain" and not filename:
                filename = "attachment"
            is_body = False
        else:
            is_body = ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename
            data = _payload_bytes(part, self.mail)
        if is_body:
            text, warning = decode_text(data, params.get("charset"))
            if warning:
                self.mail.warn(warning)
            if ctype == "text/plain":
                text, files = extract_blocks(text)
                for uu_name, uu_data in files:
                    self.mail.parts.append(MailPart(data=uu_data, mime_type=_guess_type(uu_name),
                                                    filename=decode_header(uu_name)))
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


_SAFE_NAME = re.compile(r"[\\/:*?\"<>|\x00-\x1f]+")


def _guess_type(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _find_html(part: Message, depth: int = 0) -> Message | None:
    """The first text/html leaf inside a multipart (multipart/related in an alternative)."""
    if depth > 4 or not part.is_multipart():
        return None
    for child in part.get_payload():
        if not isinstance(child, Message):
            continue
        if _content_type(child)[0] == "text/html":
            return child
        found = _find_html(child, depth + 1)
        if found is not None:
            return found
    return None


def _read_headers(msg: Message) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        headers.setdefault(name.lower(), []).append(str(value))
    return headers


def parse_mail(raw: bytes) -> ParsedMail:
    """Parse one mail. Problems become `warnings`; the call itself does not fail on bad input."""
    body, skipped = skip_leading_junk(raw)
    try:
        msg: Message = email.message_from_bytes(body, _class=EmailMessage, policy=POLICY)
        broken = False
    except Exception:  # noqa: BLE001 - the header registry gave up on a MIME header: read it plainly
        msg, broken = email.message_from_bytes(body, policy=email.policy.compat32), True
    headers = _read_headers(msg)
    mail = ParsedMail(raw=raw, message=msg, headers=headers, skipped_lines=skipped)
    if broken:
        mail.warn("malformed MIME headers; the structure was read without them")
    if skipped and not (len(skipped) == 1 and skipped[0].startswith("From ")):
        mail.warn(f"{len(skipped)} line(s) before the headers were skipped")
    mail.subject = mail.header("subject") or ""
    sender = find_sender(headers)
    mail.from_name, mail.from_addr, mail.sender_header = sender.name, sender.address, sender.header
    mail.invalid_addresses.extend(sender.invalid)
    if sender.warning:
        mail.warn(sender.warning)
    seen: set[str] = set()
    recipients = parse_mailboxes(headers.get("to", []) + headers.get("cc", []))
    mail.invalid_addresses.extend(recipients.invalid)
    for _, addr in recipients.valid:
        if addr not in seen:
            seen.add(addr)
            mail.recipients.append(addr)
    if mail.invalid_addresses:
        mail.warn("invalid address(es) ignored: " + "; ".join(a[:80] for a in mail.invalid_addresses[:5]))
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
    if (mail.text is None or collector.html_body) and mail.html is not None:
        mail.text = html_to_text(mail.html)
        mail.text_from_html = True
    return mail
