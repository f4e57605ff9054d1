"""UnionIDs of Official Account followers (user/info, for accounts bound to an open platform), so a
follower and the same person on WeCom become one contact."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from scrm.db.models import ContactIdentity, Inbox
from scrm.services.wecom.unionid import record_unionids

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.oa")


async def fetch_follower_unionids(ctx: AppContext, contact_id: int) -> int:
    """For a new contact's Official Account identities (inboxes with `link_unionid`), fetch and link UnionIDs."""
    async with ctx.db.session() as s:
        rows = (await s.execute(select(ContactIdentity.external_id, Inbox).join(Inbox, Inbox.id == ContactIdentity.inbox_id)
                                .where(ContactIdentity.contact_id == contact_id, Inbox.channel_type == "wechat_oa",
                                       Inbox.active.is_(True)))).all()
    merged = 0
    for openid, inbox in rows:
        if not (inbox.settings or {}).get("link_unionid"):
            continue
        adapter = ctx.adapters.for_inbox(inbox)
        try:
            info = await adapter.client.user_info(openid)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a follower without a UnionID stays a separate person
            log.info("wechat user/info for inbox %s failed: %s", inbox.id, exc)
            continue
        unionid = info.get("unionid")
        if isinstance(unionid, str) and unionid:
            merged += await record_unionids(ctx, inbox.id, {openid: unionid})
    return merged
