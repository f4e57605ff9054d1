"""Make inbound items storable whatever a channel let through, before ingest stores them.

Channels validate their own payloads, but some values are valid for the platform and still
unstorable: PostgreSQL refuses text with NUL characters, no driver encodes a lone surrogate, JSON
columns take no NaN, a time of year 1 at +14:00 has no UTC, and profile fields have column lengths.
A customer's message must not be refused for that (the platform would retry it forever, or drop
it), so here, for every channel alike:

- NUL characters are removed from all text (message, names, ids, attachment fields, payload);
- unpaired surrogates become U+FFFD;
- non-finite numbers in payloads and attributes become null;
- a `sent_at` outside 1970..9999 UTC (or not convertible to UTC) is dropped (the receive time is used);
- profile fields are cut to their column lengths.

The HTTP API channel refuses NUL in identifiers and out-of-range times with 400 before this (its
integrators can fix their request); this is the floor for every channel.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from scrm.domain import Attachment, ChannelEvent, ContactProfile, InboundMessage

# Column lengths of the profile fields (scrm/db/models.py: Contact, ContactIdentity).
PROFILE_LENGTHS = {"name": 255, "username": 255, "language": 16, "email": 255, "phone": 64}
_PROFILE_FIELDS = (*PROFILE_LENGTHS.items(), ("avatar_url", None))
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_DEPTH = 64


def clean_text(value: str) -> str:
    """The text without NUL characters, with unpaired surrogates replaced by U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # A UTF-16 round trip joins surrogate pairs and replaces the unpaired ones.
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def clean_value(value: Any, depth: int = 0) -> Any:
    """A JSON-like value with every string cleaned and non-finite floats as None."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        return {clean_text(str(k)): clean_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_value(v, depth + 1) for v in value]
    return value


def clean_time(value: datetime | None) -> datetime | None:
    """A timezone-aware time within 1970..9999 UTC, else None (a naive time is left to ingest)."""
    if value is None or value.tzinfo is None:
        return value
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return utc if utc >= _EARLIEST else None


def _opt(value: str | None, limit: int | None = None) -> str | None:
    if value is None:
        return None
    text = clean_text(str(value))
    return text[:limit] if limit else text


def _profile(profile: ContactProfile | None) -> ContactProfile | None:
    if profile is None:
        return None
    fields = {name: _opt(getattr(profile, name), limit) for name, limit in _PROFILE_FIELDS}
    attributes = clean_value(dict(profile.attributes)) if profile.attributes else {}
    if attributes == profile.attributes and all(fields[name] is getattr(profile, name) for name in fields):
        return profile  # already storable (the usual case): no copy
    return ContactProfile(**fields, attributes=attributes)


def _attachment(a: Attachment) -> Attachment:
    return dataclasses.replace(
        a, filename=_opt(a.filename), mime_type=_opt(a.mime_type), storage_key=_opt(a.storage_key), url=_opt(a.url),
        source=clean_value(dict(a.source)) if a.source else {},
    )


def clean_message(m: InboundMessage) -> InboundMessage:
    """A storable copy of one inbound message (the message itself when nothing in it needs cleaning)."""
    external_id, sender_id, text = clean_text(m.external_id), clean_text(m.sender_id), _opt(m.text)
    attachments = tuple(_attachment(a) for a in m.attachments) if m.attachments else m.attachments
    profile, sent_at = _profile(m.profile), clean_time(m.sent_at)
    reply_to = _opt(m.reply_to_external_id)
    thread_refs = tuple(clean_text(r) for r in m.thread_refs) if m.thread_refs else m.thread_refs
    payload = clean_value(dict(m.payload)) if m.payload else {}
    if (external_id is m.external_id and sender_id is m.sender_id and text is m.text and profile is m.profile
            and sent_at is m.sent_at and reply_to is m.reply_to_external_id and thread_refs is m.thread_refs
            and payload == m.payload and type(m.payload) is dict
            and all(a is b for a, b in zip(attachments, m.attachments, strict=True))):
        return m
    return dataclasses.replace(
        m, external_id=external_id, sender_id=sender_id, text=text, attachments=attachments, profile=profile,
        sent_at=sent_at, reply_to_external_id=reply_to, thread_refs=thread_refs, payload=payload,
    )


def clean_event(e: ChannelEvent) -> ChannelEvent:
    """A storable copy of one channel event."""
    return dataclasses.replace(
        e, sender_id=_opt(e.sender_id), external_id=_opt(e.external_id), profile=_profile(e.profile),
        occurred_at=clean_time(e.occurred_at), data=clean_value(dict(e.data)) if e.data else {},
    )


def clean_items(items: Sequence[InboundMessage | ChannelEvent]) -> list[InboundMessage | ChannelEvent]:
    """Storable copies of a webhook's or poller's items (see the module docstring)."""
    return [clean_message(i) if isinstance(i, InboundMessage) else clean_event(i) for i in items]
