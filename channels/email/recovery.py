"""Recovering what broken or unusual mail still says: headers after junk lines, a sender when From
is missing or invalid, and whether a plain-text alternative is only a stub of the HTML one.

What mature help desks (Zammad, Chatwoot, OTRS) do with such mail: skip lines before the headers,
reply to From, else Reply-To, Sender, Return-Path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from channels.email.headers import decode_header, parse_mailboxes

MAX_JUNK_LINES = 20  # lines before the first header that are skipped (mbox "From ", forwarder garbage)
# Where the reply goes when From is missing or invalid, in the order help desks use.
SENDER_HEADERS = ("from", "reply-to", "sender", "return-path")
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
# A plain part that only points at the HTML one ("see the HTML version", "请使用支持HTML的客户端").
_STUB_PLAIN = re.compile(
    r"(?i)\bhtml\b.{0,60}\b(version|part|mail|e-?mail|message|format|client|viewer|browser)\b"
    r"|\b(view|read|open|see)\b.{0,40}\b(in|with)\b.{0,20}\b(browser|html)"
    r"|(HTML|超文本).{0,20}(邮件|郵件|格式|客户端|用戶端|版本|查看|阅读|閱讀)"
)


@dataclass
class Sender:
    """Who a mail is from, and how we know."""

    name: str = ""
    address: str | None = None
    header: str | None = None  # the header it came from
    invalid: list[str] = field(default_factory=list)  # the From header's invalid addresses, as written
    warning: str | None = None


def find_sender(headers: dict[str, list[str]]) -> Sender:
    """From, else Reply-To, Sender, Return-Path: the first header with a valid address."""
    result = Sender()
    from_name = ""
    for name in SENDER_HEADERS:
        values = headers.get(name, [])
        if not values:
            continue
        boxes = parse_mailboxes(values)
        if name == "from":
            result.invalid.extend(boxes.invalid)
            if boxes.invalid and not boxes.valid:
                from_name = _display_name(values[0])
        if boxes.valid:
            display, result.address = boxes.valid[0]
            result.name = display or from_name
            result.header = name
            if name != "from":
                missing = "invalid" if "from" in headers else "missing"
                result.warning = f"From header {missing}; the sender was taken from {name.title()}"
            return result
    return result


def _display_name(value: str) -> str:
    text = decode_header(value)
    name = text.split("<", 1)[0].strip().strip('"').strip()
    return name if "@" not in name else ""


def is_stub(plain: str, html_text: str) -> bool:
    """A plain alternative that does not carry the message: empty, "see the HTML version", or much
    shorter than the HTML part's text."""
    text = plain.strip()
    if not text:
        return bool(html_text.strip())
    if len(text) < 300 and _STUB_PLAIN.search(text):
        return True
    rich = html_text.strip()
    return len(rich) >= 120 and len(text) * 4 < len(rich)


def might_be_stub(plain: str, html: str) -> bool:
    """Cheap pre-check: a plain part at least a quarter of the raw HTML's length (an upper bound of
    its text) that does not point at the HTML version is no stub; only the rest need the HTML's text."""
    text = plain.strip()
    return not text or len(text) * 4 < len(html) or (len(text) < 300 and _STUB_PLAIN.search(text) is not None)


def skip_leading_junk(raw: bytes) -> tuple[bytes, list[str]]:
    """Drop lines before the first header line (mbox "From ", a stray blank or garbage line)."""
    if _HEADER_LINE.match(raw):
        return raw, []
    skipped: list[str] = []
    pos = 0
    for _ in range(MAX_JUNK_LINES):
        end = raw.find(b"\n", pos)
        if end < 0:
            break
        skipped.append(raw[pos:end].rstrip(b"\r").decode("utf-8", "replace")[:200])
        pos = end + 1
        if _HEADER_LINE.match(raw, pos):
            return raw[pos:], skipped
    return raw, []
