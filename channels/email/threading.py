"""Thread references and the conversation token of the subject ("[#1042]").

Ingest resolves a thread in this order: subject token -> any known Message-ID in In-Reply-To /
References (most recent first) -> a new conversation. `resolve_thread` is that rule over a
mapping, used by the benchmark and usable by the application.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_TOKEN = re.compile(r"\[#(\d{1,12})\]")
_PREFIX = re.compile(r"^\s*(?:(?:re|fw|fwd|aw|sv|antw|回复|回覆|答复|转发|轉寄)\s*(?:\[\d+\])?\s*[:：]\s*)+", re.IGNORECASE)


def thread_refs(in_reply_to: Sequence[str], references: Sequence[str]) -> tuple[str, ...]:
    """Earlier Message-IDs of the thread, most recent first, without duplicates."""
    seen: set[str] = set()
    refs: list[str] = []
    for ref in [*in_reply_to, *reversed(references)]:
        if ref not in seen:
            seen.add(ref)
            refs.append(ref)
    return tuple(refs)


def subject_token(subject: str) -> int | None:
    """The conversation id named in the subject ("Re: [#1042] Refund" -> 1042), if any."""
    match = _TOKEN.search(subject)
    return int(match.group(1)) if match else None


def reply_subject(subject: str, conversation_id: int | None) -> str:
    """Subject of our reply: one "Re: " prefix and the conversation token kept (added if missing)."""
    base = _PREFIX.sub("", subject or "").strip()
    if conversation_id is not None and subject_token(base) is None:
        base = f"[#{conversation_id}] {base}".strip()
    return f"Re: {base}" if base else f"Re: [#{conversation_id}]" if conversation_id else "Re:"


def resolve_thread(
    refs: Sequence[str], hint: int | None, known: Mapping[str, int], valid: Mapping[int, object] | None = None
) -> int | None:
    """Conversation id for a mail: its subject token, else the first known reference, else None."""
    if hint is not None and (valid is None or hint in valid):
        return hint
    for ref in refs:
        conversation = known.get(ref)
        if conversation is not None:
            return conversation
    return None
