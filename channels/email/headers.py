"""Header decoding that survives real mail: RFC 2047 words in any charset, raw 8-bit headers.

The stdlib decodes each encoded word on its own with the declared charset and replaces what does
not fit (a GB2312-labelled 镕 becomes U+FFFD). We join adjacent words of one charset first (senders
split multi-byte characters across words) and decode with the superset codecs of charsets.py.
"""

from __future__ import annotations

import binascii
import re
from email.utils import getaddresses

from channels.email.charsets import decode_text

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_MSGID = re.compile(r"<([^<>\s]+)>")


def unfold(value: str) -> str:
    """Join folded header lines."""
    return _FOLD.sub("", value) if "\n" in value else value


def _raw_bytes_text(value: str) -> str:
    # The parser keeps undeclared 8-bit header bytes as surrogate escapes; decode them properly.
    try:
        value.encode("ascii")
        return value
    except UnicodeEncodeError:
        data = value.encode("utf-8", "surrogateescape")
        return decode_text(data, None)[0]


def _word_bytes(encoding: str, text: str) -> bytes:
    if encoding in "bB":
        text = text.rstrip("=")
        text += "=" * (-len(text) % 4)
        try:
            return binascii.a2b_base64(text)
        except binascii.Error:
            return text.encode("ascii", "replace")
    return binascii.a2b_qp(text.encode("ascii", "replace"), header=True)


def decode_header(value: str | None) -> str:
    """Decode a raw header value to text (unfolded, encoded words decoded). Never raises."""
    if not value:
        return ""
    value = _raw_bytes_text(unfold(value))
    if "=?" not in value:
        return value.strip()
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            out.append(decode_text(b"".join(pending), pending_charset)[0])
        pending, pending_charset = [], None

    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos:match.start()]
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        # Whitespace between two encoded words is not part of the text (RFC 2047 section 6.2).
        if gap and not (gap.isspace() and pending):
            flush()
            out.append(gap)
        if pending and charset.lower() != (pending_charset or "").lower():
            flush()
        pending.append(_word_bytes(match.group(2), match.group(3)))
        pending_charset = charset
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out).strip()


def parse_addresses(values: list[str]) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs from raw address headers; invalid ones dropped."""
    pairs = getaddresses([_raw_bytes_text(unfold(v)) for v in values])
    result = []
    for name, addr in pairs:
        addr = addr.strip().lower()
        if "@" not in addr and addr not in ("mailer-daemon", "postmaster"):
            continue
        result.append((decode_header(name) if name else "", addr))
    return result


def parse_msgids(value: str | None) -> list[str]:
    """Message-IDs (without angle brackets) in a Message-ID / In-Reply-To / References value."""
    if not value:
        return []
    ids = _MSGID.findall(value)
    if not ids:
        bare = value.strip()
        return [bare] if bare and " " not in bare and "@" in bare else []
    return ids
