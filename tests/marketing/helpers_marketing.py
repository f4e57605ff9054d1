"""Helpers for marketing tests: contacts with identities written straight to the database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from scrm.context import AppContext
from scrm.db.models import Contact, ContactIdentity, ContactTag, Inbox, utcnow


async def make_contact(
    ctx: AppContext,
    *,
    name: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    attributes: dict[str, Any] | None = None,
    opt_outs: dict[str, Any] | None = None,
    tags: tuple[str, ...] = (),
    identities: list[tuple[Inbox, str, dict[str, Any]]] = (),  # type: ignore[assignment]
    last_seen_days_ago: float = 0,
) -> int:
    """Create a contact with tags and identities ((inbox, external id, identity fields) ...)."""
    now = utcnow()
    async with ctx.db.transaction() as s:
        c = Contact(name=name, email=email, phone=phone, attributes=attributes or {}, opt_outs=opt_outs or {},
                    first_seen_at=now - timedelta(days=last_seen_days_ago),
                    last_seen_at=now - timedelta(days=last_seen_days_ago))
        s.add(c)
        await s.flush()
        for tag in tags:
            s.add(ContactTag(contact_id=c.id, tag=tag))
        for inbox, external_id, fields in identities:
            s.add(ContactIdentity(inbox_id=inbox.id, external_id=external_id, contact_id=c.id, attributes={},
                                  last_inbound_at=fields.pop("last_inbound_at", now), **fields))
        return c.id


def ago(hours: float) -> datetime:
    return utcnow() - timedelta(hours=hours)
