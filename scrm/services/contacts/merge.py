"""Merging two contacts into one person, and suggestions of contacts that are probably the same person.

Conflict rule (shown to the agent and kept in the audit log): the surviving contact's non-empty values
win; the merged contact's values only fill gaps. Tags are united; opt-outs are united (a refusal is
never lost by a merge); first seen takes the earliest, last seen the latest.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select, update

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, ContactTag, Conversation, Inbox, Ticket
from scrm.db.models_marketing import BroadcastRecipient
from scrm.services.agents import audit
from scrm.services.uow import Tx

CONFLICT_RULE = "the surviving contact's values win; the merged contact's values only fill empty fields"


class MergeError(ValueError):
    def __init__(self, message: str, status: int = 409, code: str = "conflict") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def merge(tx: Tx, target_id: int, source_id: int, agent_id: int | None) -> dict[str, Any]:
    """Move everything of `source` into `target`; `source` remains as a pointer (merged_into_id)."""
    if target_id == source_id:
        raise MergeError("a contact cannot be merged into itself", 400, "same_contact")
    # Lock both rows in id order so two concurrent merges cannot deadlock.
    locked = {c.id: c for c in (await tx.session.scalars(
        select(Contact).where(Contact.id.in_([target_id, source_id])).order_by(Contact.id).with_for_update())).all()}
    target, source = locked.get(target_id), locked.get(source_id)
    if target is None or source is None:
        raise MergeError("contact not found", 404, "not_found")
    if target.merged_into_id or source.merged_into_id:
        raise MergeError("one of the contacts was already merged into another", 409, "already_merged")
    conflicts: dict[str, Any] = {}
    filled: list[str] = []
    for name in ("name", "email", "phone", "language", "avatar_url"):
        mine, theirs = getattr(target, name), getattr(source, name)
        if theirs and not mine:
            setattr(target, name, theirs)
            filled.append(name)
        elif theirs and mine and theirs != mine:
            conflicts[name] = {"kept": mine, "discarded": theirs}
    attrs = dict(target.attributes or {})
    for key, value in (source.attributes or {}).items():
        if key not in attrs or attrs[key] in (None, ""):
            attrs[key] = value
            filled.append(f"attributes.{key}")
        elif attrs[key] != value:
            conflicts[f"attributes.{key}"] = {"kept": attrs[key], "discarded": value}
    target.attributes = attrs
    target.opt_outs = {**(source.opt_outs or {}), **(target.opt_outs or {})} | {
        k: True for k, v in (source.opt_outs or {}).items() if v is True}
    target.first_seen_at = min(target.first_seen_at, source.first_seen_at)
    target.last_seen_at = max(target.last_seen_at, source.last_seen_at)
    s = tx.session
    moved = {}
    for model in (ContactIdentity, Conversation, Ticket):
        res = await s.execute(update(model).where(model.contact_id == source_id).values(contact_id=target_id)
                              .execution_options(synchronize_session=False))
        moved[model.__tablename__] = int(res.rowcount or 0)  # type: ignore[attr-defined]
    # A contact who got the same broadcast as both people keeps the first row (unique per broadcast).
    dup = select(BroadcastRecipient.broadcast_id).where(BroadcastRecipient.contact_id == target_id)
    await s.execute(update(BroadcastRecipient).where(BroadcastRecipient.contact_id == source_id,
                                                     BroadcastRecipient.broadcast_id.not_in(dup))
                    .values(contact_id=target_id).execution_options(synchronize_session=False))
    from scrm.services.marketing.campaigns import (
        merge_contacts,  # campaign touches, clicks, conversions, attribution
    )

    await merge_contacts(s, target_id, source_id)
    tags = set((await s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == target_id))).all())
    source_tags = set((await s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == source_id))).all())
    for tag in source_tags - tags:
        s.add(ContactTag(contact_id=target_id, tag=tag))
    source.merged_into_id = target_id
    source.email, source.phone = None, None  # no longer suggested as a duplicate
    result = {"source_id": source_id, "moved": moved, "tags_added": sorted(source_tags - tags),
              "filled": filled, "conflicts": conflicts, "rule": CONFLICT_RULE}
    audit.record(tx, agent_id, "contact.merge", "contact", target_id, **result)
    tx.emit(ev.CONTACT_UPDATED, contact_id=target_id, change="merged", merged_id=source_id)
    return {"target_id": target_id, **result}


def normalize_phone(phone: str | None) -> str | None:
    digits = re.sub(r"\D", "", phone or "")
    if digits.startswith("86") and len(digits) == 13:  # +86 mainland mobile numbers
        digits = digits[2:]
    return digits or None


async def suggestions(tx: Tx, limit: int = 100) -> list[dict[str, Any]]:
    """Pairs of live contacts sharing a verified email or phone.

    An email is verified when it is the address of an email-channel identity (the contact wrote from
    it) or the contact's attribute `email_verified` is true; a phone when `phone_verified` is true.
    """
    s = tx.session
    verified_emails = set(
        e.lower() for e in (await s.scalars(select(ContactIdentity.external_id).join(Inbox, Inbox.id ==
                                                  ContactIdentity.inbox_id).where(Inbox.channel_type == "email"))).all())
    dup_emails = select(func.lower(Contact.email)).where(Contact.merged_into_id.is_(None), Contact.email.is_not(None)) \
        .group_by(func.lower(Contact.email)).having(func.count() > 1)
    rows = (await s.execute(select(Contact.id, Contact.name, Contact.email, Contact.attributes).where(
        Contact.merged_into_id.is_(None), func.lower(Contact.email).in_(dup_emails)).order_by(Contact.id))).all()
    out: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        groups.setdefault(("email", r.email.lower()), []).append(r)
    phone_rows = (await s.execute(select(Contact.id, Contact.name, Contact.phone, Contact.attributes).where(
        Contact.merged_into_id.is_(None), Contact.phone.is_not(None)).order_by(Contact.id))).all()
    for r in phone_rows:
        key = normalize_phone(r.phone)
        if key:
            groups.setdefault(("phone", key), []).append(r)
    for (kind, value), members in groups.items():
        if len(members) < 2:
            continue
        if kind == "email":
            verified = value in verified_emails or any((m.attributes or {}).get("email_verified") is True
                                                       for m in members)
        else:
            verified = any((m.attributes or {}).get("phone_verified") is True for m in members)
        if not verified:
            continue
        keep = members[0]
        for other in members[1:]:
            out.append({"reason": f"same {kind}", "value": value, "target": {"id": keep.id, "name": keep.name},
                        "source": {"id": other.id, "name": other.name}})
            if len(out) >= limit:
                return out
    return out
