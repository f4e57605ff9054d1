"""Quote stripping: the new part of a reply, for the agent's view (the full body is kept too).

Plain text: the reply ends at the first quote header ("On ... wrote:", Outlook "From:/Sent:" and
"发件人:/发送时间:", Gmail "...写道：", QQ "原始邮件", "-----Original Message-----"); `>` lines are
dropped. HTML: the body is cut at the first quote container (blockquote, gmail_quote,
divRplyFwdMsg, ...) before it is turned into text.
"""

from __future__ import annotations

import re

# One line that starts the quoted history.
_HEADER_LINE = re.compile(
    r"""^\s*(?:
        -{2,}\s*(?:Original\s+Message|Forwarded\s+message|原始邮件|原始郵件|转发邮件|Reply\s+message)\s*-{2,}
      | -{3,}\s*Original\s+Message\s*-{3,}
      | _{10,}\s*
      | \S.{0,300}\s写道\s*[:：]\s*
      | .{0,300}写道\s*[:：]\s*
      | On\s.{1,300}\swrote\s*:\s*
      | Le\s.{1,300}\sa\s+écrit\s*:\s*
      | Am\s.{1,300}\sschrieb\s.{0,100}:\s*
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
# "On <date>, <name>" folded before "wrote:" by some clients.
_WROTE_TAIL = re.compile(r"^\s*.{0,200}(?:wrote|写道)\s*[:：]\s*$", re.IGNORECASE)
_ON_START = re.compile(r"^\s*(On|在|于)\s", re.IGNORECASE)
# Outlook header block: a From line followed closely by Sent/Date/To lines.
_FROM_LINE = re.compile(r"^\s*\*?(From|发件人|寄件者|De|Von)\s*\*?\s*[:：]", re.IGNORECASE)
_HEADER_FIELD = re.compile(
    r"^\s*\*?(Sent|Date|To|Subject|Cc|发送时间|日期|时间|收件人|主题|抄送|寄件日期|收件者|主旨)\s*\*?\s*[:：]",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"^\s*>")

# HTML quote containers, in the order clients use them.
_HTML_QUOTE = re.compile(
    r"""<(?:
        blockquote\b
      | div[^>]*\bclass=["'][^"']*\b(?:gmail_quote|gmail_attr|yahoo_quoted|moz-cite-prefix|protonmail_quote)\b
      | div[^>]*\bid=["'](?:divRplyFwdMsg|appendonsend|mail-editor-reference-message-container|origbody)["']
      | hr[^>]*\bid=["']stopSpelling["']
      | div[^>]*>\s*(?:<[^>]+>\s*)*-{2,}\s*原始邮件
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def _quote_start(lines: list[str]) -> int | None:
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if _HEADER_LINE.match(line):
            return i
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _ON_START.match(line) and _WROTE_TAIL.match(nxt):
            return i
        if _FROM_LINE.match(line):
            window = [ln for ln in lines[i + 1:i + 6] if ln.strip()]
            if sum(1 for ln in window if _HEADER_FIELD.match(ln)) >= 2:
                return i
    return None


def strip_quotes(text: str) -> str:
    """The new part of a plain-text reply; the whole text if nothing new would remain."""
    lines = text.replace("\r\n", "\n").split("\n")
    cut = _quote_start(lines)
    if cut is not None:
        lines = lines[:cut]
    kept = [ln for ln in lines if not _QUOTED.match(ln)]
    # A line like "John wrote:" right before a dropped `>` block is part of the quote.
    while kept and not kept[-1].strip():
        kept.pop()
    if kept and _WROTE_TAIL.match(kept[-1]) and len(kept) < len(lines):
        kept.pop()
    result = "\n".join(kept).strip()
    return result or text.strip()


def cut_html_quote(html: str) -> str:
    """The HTML before the first quote container (whole HTML if there is none)."""
    match = _HTML_QUOTE.search(html)
    return html[: match.start()] if match else html
