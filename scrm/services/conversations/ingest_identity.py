"""Who wrote: an inbound item's sender as an identity (inbox + external user id) and its contact.

Found with a lock (it serializes the choice of conversation per sender), created when new, and
updated from the platform's profile by the rules in ingest_rules.apply_profile.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Inbox
from scrm.domain import ContactProfile
from scrm.services.conversations import ingest_rules as rules
from scrm.services.uow import Tx


async def find_identity(tx: Tx, inbox_id: int, external_id: str, *, lock: bool) -> ContactIdentity | None:
    stmt = select(ContactIdentity).where(ContactIdentity.inbox_id == inbox_id, ContactIdentity.external_id == external_id)
    if lock:
        # Serializes conversation choice per identity on PostgreSQL. NO KEY UPDATE: foreign-key checks
        # of concurrent inserts (a bot reply's delivery row) must not wait on it, or they deadlock.
        stmt = stmt.with_for_update(key_share=True)
    return await tx.session.scalar(stmt)


async def resolve_identity(
    tx: Tx, inbox: Inbox, external_id: str, profile: ContactProfile | None, now: datetime
) -> tuple[ContactIdentity, Contact, bool]:
    """Find the identity (inbox + external user id) and its contact, creating both when new."""
    identity = await find_identity(tx, inbox.id, external_id, lock=True)
    if identity is not None:
        contact = await tx.session.get(Contact, identity.contact_id)
        assert contact is not None
        while contact.merged_into_id is not None:  # follow merges to the surviving contact
            merged = await tx.session.get(Contact, contact.merged_into_id)
            assert merged is not None
            contact = merged
            identity.contact_id = contact.id
        if profile is not None:
            update_profile(tx, contact, identity, profile)
        return identity, contact, False
    contact = rules.new_contact(now)
    tx.session.add(contact)
    await tx.session.flush()
    identity = ContactIdentity(inbox_id=inbox.id, external_id=external_id, contact_id=contact.id, attributes={})
    tx.session.add(identity)
    if profile is not None:
        update_profile(tx, contact, identity, profile)
    await tx.session.flush()  # raises IntegrityError if a concurrent request created it first
    tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id, created=True)
    return identity, contact, True


def update_profile(tx: Tx, contact: Contact, identity: ContactIdentity, profile: ContactProfile) -> None:
    """Apply the profile (ingest_rules.apply_profile); an existing contact that changed is an event."""
    if rules.apply_profile(contact, identity, profile) and contact.id is not None:
        tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id)
