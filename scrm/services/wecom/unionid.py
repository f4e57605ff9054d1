"""One person across WeChat: identities with the same UnionID (an Official Account follower, a 微信客服
customer, a WeCom external contact) end up on one contact, merged automatically and audited.

Only the UnionID links people, never a name: identities without one stay separate (agents can merge
them by hand). The oldest contact survives; the merge is the existing audited one (contacts_merge).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import select

from scrm.db.models import Contact, ContactIdentity
from scrm.db.models_wecom import WeChatUnionId
from scrm.services.agents import audit
from scrm.services.contacts.merge import MergeError, merge
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.unionid")


async def record_unionids(ctx: AppContext, inbox_id: int, unionids: Mapping[str, str]) -> int:
    """Remember the UnionIDs of identities (external id -> unionid) of one inbox, then link; returns merges."""
    merges = 0
    for external_id, unionid in unionids.items():
        async with unit_of_work(ctx) as tx:
            identity = await tx.session.scalar(select(ContactIdentity).where(
                ContactIdentity.inbox_id == inbox_id, ContactIdentity.external_id == external_id))
            if identity is None or not unionid:
                continue
            row = await tx.session.get(WeChatUnionId, identity.id)
            if row is None:
                tx.session.add(WeChatUnionId(identity_id=identity.id, unionid=unionid))
            elif row.unionid != unionid:
                row.unionid = unionid
            await tx.session.flush()
            merges += await link(tx, unionid)
    return merges


async def _live(tx: Tx, contact_id: int) -> Contact | None:
    contact = await tx.session.get(Contact, contact_id)
    while contact is not None and contact.merged_into_id is not None:
        contact = await tx.session.get(Contact, contact.merged_into_id)
    return contact


async def link(tx: Tx, unionid: str) -> int:
    """Merge every contact holding an identity with this UnionID into the oldest of them."""
    contact_ids = (await tx.session.scalars(
        select(ContactIdentity.contact_id).join(WeChatUnionId, WeChatUnionId.identity_id == ContactIdentity.id)
        .where(WeChatUnionId.unionid == unionid))).all()
    live: dict[int, Contact] = {}
    for cid in contact_ids:
        contact = await _live(tx, cid)
        if contact is not None:
            live[contact.id] = contact
    if len(live) < 2:
        return 0
    target, *others = sorted(live)
    merged = 0
    for source in others:
        try:
            await merge(tx, target, source, None)
            audit.record(tx, None, "contact.link_unionid", "contact", target, source_id=source,
                         reason="same WeChat UnionID")
            merged += 1
            log.info("contacts %s and %s share WeChat UnionID %s…: merged into %s", target, source, unionid[:6],
                     target)
        except MergeError as exc:
            log.warning("UnionID merge of %s into %s refused: %s", source, target, exc)
    return merged
