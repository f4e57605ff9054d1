"""HTML mail bodies: sanitized HTML for the agent view and readable plain text."""

from __future__ import annotations

import html as htmllib
import re

import nh3

_BLOCK_END = re.compile(r"(?i)<\s*(br\s*/?|/p|/div|/li|/tr|/h[1-6]|/blockquote|/pre|/table)\s*>")
_LI = re.compile(r"(?i)<\s*li[^>]*>")
_BLANKS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_SPACES = re.compile(r"[ \t\u00a0]+")
_HEAD = re.compile(r"(?is)<(head|style|script|title)\b.*?</\1\s*>")


def sanitize_html(html: str) -> str:
    """Remove scripts, event handlers and unsafe URLs; keep formatting tags."""
    return nh3.clean(html)


def html_to_text(html: str) -> str:
    """Readable text of an HTML body: block ends become line breaks, tags and entities removed."""
    html = _HEAD.sub("", html)
    html = _BLOCK_END.sub("\n", html)
    html = _LI.sub("\n- ", html)
    text = htmllib.unescape(nh3.clean(html, tags=set()))
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()
