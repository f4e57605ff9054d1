"""uuencoded files: parts declared x-uuencode (with or without their `begin` line) and the
`begin 644 name ... end` blocks old clients (Outlook Express, Pine, mailing-list digests) put
straight into a plain-text body."""

from __future__ import annotations

import binascii
import re

UU_ENCODINGS = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
_BEGIN = re.compile(r"^begin(?:-base64)? ([0-7]{3,4}) (.+?)\s*$")
_BLOCK = re.compile(r"(?ms)^begin [0-7]{3,4} ([^\r\n]+?)[ \t]*\r?\n(.*?)^end[ \t]*\r?$\n?")


def _line(line: bytes) -> bytes:
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:
        # Broken encoders pad lines wrongly; the length byte says how much is real.
        nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3 if line else 0
        try:
            return binascii.a2b_uu(line[:nbytes])
        except binascii.Error:
            return b""


def decode_uu(data: bytes) -> tuple[bytes, str | None]:
    """The bytes and file name of uuencoded data; lines before `begin` are skipped, and data
    without a `begin` line is decoded from its first line."""
    lines = data.splitlines()
    name = None
    start = 0
    for i, raw in enumerate(lines[:50]):
        match = _BEGIN.match(raw.decode("latin-1"))
        if match:
            name, start = match.group(2), i + 1
            break
    out: list[bytes] = []
    for line in lines[start:]:
        stripped = line.strip(b" \t\r\n\f")
        if stripped == b"end":
            break
        if not stripped:
            continue
        out.append(_line(line.rstrip(b"\r\n")))
    return b"".join(out), name


def extract_blocks(text: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Cut `begin ... end` blocks out of a text body; returns (text without them, [(name, bytes)])."""
    if "begin " not in text:
        return text, []
    files: list[tuple[str, bytes]] = []

    def cut(match: re.Match[str]) -> str:
        data, _ = decode_uu(("begin 644 x\n" + match.group(2) + "end\n").encode("latin-1", "replace"))
        files.append((match.group(1), data))
        return ""

    rest = _BLOCK.sub(cut, text)
    return (re.sub(r"(?:\r?\n){3,}", "\n\n", rest).rstrip() if files else text), files
