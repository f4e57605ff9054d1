"""Agents' edits of a contact's profile: name, email, phone, language, custom attributes and tags.

One write path for each: custom attributes always go through `attributes.set_values` (typed and
validated), tags through `replace_tags` (trimmed, de-duplicated, at most 64 characters each)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from scrm import events as ev
from scrm.db.models import Contact, ContactTag
from scrm.services.agents import audit
from scrm.services.contacts import attributes as attr_svc
from scrm.services.uow import Tx

PROFILE_FIELDS = ("name", "email", "phone", "language")
MAX_TAG = 64


class TagError(ValueError):
    """A tag that cannot be stored."""


def normalize_tags(tags: list[str]) -> list[str]:
    """Trimmed, de-duplicated, sorted; TagError when one is too long."""
    clean = sorted({t.strip() for t in tags if t.strip()})
    if any(len(t) > MAX_TAG for t in clean):
        raise TagError(f"tags are at most {MAX_TAG} characters")
    return clean


async def replace_tags(tx: Tx, contact_id: int, clean: list[str]) -> list[str]:
    """Make the contact's tags exactly `clean` (normalized); returns the tags before."""
    before = sorted((await tx.session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact_id))).all())
    if before != clean:
        await tx.session.execute(delete(ContactTag).where(ContactTag.contact_id == contact_id))
        tx.session.add_all(ContactTag(contact_id=contact_id, tag=t) for t in clean)
    return list(before)


async def update_profile(tx: Tx, by: int | None, contact_id: int, changes: dict[str, Any],
                         attributes: dict[str, Any] | None, tags: list[str] | None) -> Contact | None:
    """Apply a PATCH of the profile (AttributeError_/TagError on bad input); None when there is no contact."""
    clean = normalize_tags(tags) if tags is not None else None
    contact = await tx.session.get(Contact, contact_id, with_for_update=True)
    if contact is None:
        return None
    for name in PROFILE_FIELDS:
        if name in changes:
            setattr(contact, name, changes[name] or None)
    if attributes is not None:
        attr_changes = await attr_svc.set_values(tx.session, contact, attributes)
        if attr_changes:
            audit.record(tx, by, "contact.attributes", "contact", contact_id, changes=attr_changes)
    if clean is not None:
        await replace_tags(tx, contact_id, clean)
    audit.record(tx, by, "contact.update", "contact", contact_id, fields=sorted(changes))
    tx.emit(ev.CONTACT_UPDATED, contact_id=contact_id)
    return contact
