"""Subscription messages (订阅通知) of an Official Account: per-follower, per-template consent.

Consent comes from the follower's own actions, reported by WeChat callbacks:
- subscribe_msg_popup_event: accept / reject in the popup; each one-time "accept" allows one send;
- subscribe_msg_change_event: the follower changed it in the account's settings (reject stops all);
- subscribe_msg_sent_event: a send's result; a refusal withdraws the consent.
A send uses up a one-time consent when the broadcast starts (recorded with the delivery, so a
retried or crashed send never spends it twice); templates listed as long-term in the inbox need none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, update

from scrm.db.models import ContactIdentity, Inbox, utcnow
from scrm.db.models_wechat import WeChatSubscribeConsent
from scrm.services.uow import Tx

REFUSED = 43101


def _long_term(inbox: Inbox | None, template_id: str) -> bool:
    return template_id in ((inbox.settings or {}).get("long_term_templates") or []) if inbox else False


async def record_consent(tx: Tx, identity: ContactIdentity, event_key: str | None, event: Mapping[str, Any]) -> int:
    """Apply one subscribe_msg_* callback to the follower's consents; returns how many templates changed."""
    s = tx.session
    inbox = await s.get(Inbox, identity.inbox_id)
    what = event.get("event")
    changed = 0
    for item in event.get("items") or []:
        template_id = str(item.get("template_id") or "")[:128]
        if not template_id:
            continue
        row = await s.get(WeChatSubscribeConsent, (identity.id, template_id), with_for_update=True)
        if row is not None and event_key and row.last_event == event_key:
            continue  # WeChat retried the callback: counted already
        if row is None:
            row = WeChatSubscribeConsent(identity_id=identity.id, template_id=template_id, status="reject",
                                         remaining=0, long_term=_long_term(inbox, template_id))
            s.add(row)
        row.last_event, row.updated_at = event_key, utcnow()
        changed += 1
        if what == "sent":
            code = item.get("error_code")
            row.last_result = str(item.get("error_status") or ("success" if code == 0 else code))[:120]
            if code not in (0, None) and (code == REFUSED or "refuse" in row.last_result.lower()):
                row.status, row.remaining = "reject", 0
            continue
        status = item.get("status")
        if status == "accept":
            row.status = "accept"
            if what == "popup" and not row.long_term:
                row.remaining = (row.remaining or 0) + 1
            row.popup_scene = item.get("popup_scene") or row.popup_scene
        elif status == "reject":
            row.status, row.remaining = "reject", 0
    await s.flush()
    return changed


async def usable(session: Any, inbox_id: int, template_id: str) -> frozenset[int]:
    """Identities of the inbox that may get `template_id` now (accepted; one-time consents left)."""
    rows = await session.scalars(select(WeChatSubscribeConsent.identity_id)
                                 .join(ContactIdentity, ContactIdentity.id == WeChatSubscribeConsent.identity_id)
                                 .where(ContactIdentity.inbox_id == inbox_id,
                                        WeChatSubscribeConsent.template_id == template_id,
                                        WeChatSubscribeConsent.status == "accept",
                                        WeChatSubscribeConsent.long_term.is_(True)
                                        | (WeChatSubscribeConsent.remaining > 0)))
    return frozenset(rows.all())


async def use_up(tx: Tx, template_id: str, identity_ids: Sequence[int]) -> None:
    """One one-time consent spent per recipient (long-term consents are not spent)."""
    ids = list(identity_ids)
    for i in range(0, len(ids), 5000):
        await tx.session.execute(update(WeChatSubscribeConsent).where(
            WeChatSubscribeConsent.identity_id.in_(ids[i:i + 5000]), WeChatSubscribeConsent.template_id == template_id,
            WeChatSubscribeConsent.long_term.is_(False), WeChatSubscribeConsent.remaining > 0,
        ).values(remaining=WeChatSubscribeConsent.remaining - 1, updated_at=utcnow())
            .execution_options(synchronize_session=False))


async def consents(session: Any, contact_id: int) -> list[dict[str, Any]]:
    """A contact's subscription-message consents, for its profile."""
    rows = (await session.execute(select(WeChatSubscribeConsent, ContactIdentity.inbox_id)
                                  .join(ContactIdentity, ContactIdentity.id == WeChatSubscribeConsent.identity_id)
                                  .where(ContactIdentity.contact_id == contact_id)
                                  .order_by(WeChatSubscribeConsent.template_id))).all()
    return [{"inbox_id": inbox_id, "identity_id": c.identity_id, "template_id": c.template_id, "status": c.status,
             "remaining": c.remaining, "long_term": c.long_term, "last_result": c.last_result,
             "updated_at": c.updated_at.isoformat() if c.updated_at else None} for c, inbox_id in rows]
