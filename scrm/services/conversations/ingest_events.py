"""Channel events (not messages): edits, delivery receipts, subscriptions, reachability, interactions.

Each is applied in its own transaction by ingest_one.ingest_each, in the order the channel reported them.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select

from scrm import events as ev
from scrm.db.models import Contact, Delivery, Inbox, Message, utcnow
from scrm.domain import ChannelEvent, ChannelEventKind, IngestOutcome
from scrm.services.conversations.ingest_identity import find_identity, resolve_identity
from scrm.services.uow import Tx

HARD_BOUNCES_UNREACHABLE = 2  # repeated hard bounces make an email identity unreachable


async def apply_event(tx: Tx, inbox: Inbox, event: ChannelEvent) -> IngestOutcome:
    """Apply one channel event in `tx`; an event about something unknown is ignored, with the reason."""
    kind = event.kind
    now = utcnow()
    if kind == ChannelEventKind.UNROUTABLE:
        from scrm.services.conversations.unroutable import store_unroutable

        return await store_unroutable(tx, inbox, event)
    if kind == ChannelEventKind.MESSAGE_EDITED:
        message = await tx.session.scalar(
            select(Message).where(Message.inbox_id == inbox.id, Message.external_id == event.external_id)
        )
        if message is None:
            return IngestOutcome(duplicate=False, ignored_reason="edited message unknown")
        new_text = event.data.get("text")
        if new_text == message.text:
            return IngestOutcome(duplicate=True, message_id=message.id, conversation_id=message.conversation_id)
        history = list(message.edit_history or [])
        history.append({"text": message.text, "replaced_at": now.isoformat()})
        message.edit_history = history
        message.text = new_text
        tx.emit(ev.MESSAGE_UPDATED, message_id=message.id, conversation_id=message.conversation_id, edited=True)
        return IngestOutcome(duplicate=False, message_id=message.id, conversation_id=message.conversation_id)

    if kind == ChannelEventKind.DELIVERY_STATUS:
        delivery = await tx.session.scalar(
            select(Delivery).where(Delivery.inbox_id == inbox.id, Delivery.external_id == event.external_id)
        )
        if delivery is None:
            return IngestOutcome(duplicate=False, ignored_reason="delivery unknown")
        if delivery.kind == "wechat_mass":  # MASSSENDJOBFINISH: WeChat's counts for a 群发 batch
            from scrm.services.marketing.wechat_mass import record_job_finish

            await record_job_finish(tx, inbox.id, str(event.external_id), event.data)
        status = str(event.data.get("status", "delivered"))
        if status not in ("delivered", "failed"):
            return IngestOutcome(duplicate=False, ignored_reason=f"status {status!r} not tracked")
        delivery.status = status
        if status == "failed":
            delivery.last_error = str(event.data.get("error") or "failed")
            survey_id = ((delivery.payload or {}).get("metadata") or {}).get("csat_survey_id")
            if isinstance(survey_id, int):  # e.g. WeCom's msg_send_fail for a closing message carrying the survey
                from scrm.services.desk.csat import not_sent

                await not_sent(tx, survey_id)  # never reached the customer: no survey asked (reports count asked ones)
        if delivery.message_id is not None:
            message = await tx.session.get(Message, delivery.message_id)
            if message is not None:
                message.delivery_status = status
                message.delivery_error = delivery.last_error if status == "failed" else None
                tx.emit(ev.MESSAGE_UPDATED, message_id=message.id, conversation_id=message.conversation_id)
        tx.emit(ev.DELIVERY_UPDATED, delivery_id=delivery.id, status=status)
        return IngestOutcome(duplicate=False, message_id=delivery.message_id, conversation_id=delivery.conversation_id)

    if not event.sender_id:
        return IngestOutcome(duplicate=False, ignored_reason=f"{kind} without sender")
    creates = kind in (ChannelEventKind.CONTACT_SUBSCRIBED, ChannelEventKind.INTERACTION, ChannelEventKind.CONTACT_UPDATED)
    if creates:
        identity, contact, _ = await resolve_identity(tx, inbox, event.sender_id, event.profile, now)
    else:
        known = await find_identity(tx, inbox.id, event.sender_id, lock=True)
        if known is None:
            return IngestOutcome(duplicate=False, ignored_reason=f"{kind} for unknown contact")
        found = await tx.session.get(Contact, known.contact_id)
        assert found is not None
        identity, contact = known, found
    if kind == ChannelEventKind.CONTACT_UNREACHABLE:
        if event.data.get("bounce"):
            attrs = dict(identity.attributes or {})
            attrs["hard_bounces"] = int(attrs.get("hard_bounces", 0)) + 1
            identity.attributes = attrs
            if attrs["hard_bounces"] >= HARD_BOUNCES_UNREACHABLE:
                identity.reachable = False
        else:
            identity.reachable = False
        identity.unreachable_reason = str(event.data.get("reason") or kind)
    elif kind == ChannelEventKind.CONTACT_REACHABLE:
        identity.reachable = True
        identity.unreachable_reason = None
    elif kind == ChannelEventKind.CONTACT_UNSUBSCRIBED:
        identity.subscribed = False
    elif kind == ChannelEventKind.CONTACT_SUBSCRIBED:
        identity.subscribed = True
        identity.last_inbound_at = now
        source = event.data.get("source")
        if source:
            identity.source = identity.source or str(source)
            if "source" not in (contact.attributes or {}):
                contact.attributes = dict(contact.attributes or {}) | {"source": source}
    elif kind == ChannelEventKind.INTERACTION:
        identity.last_inbound_at = now
    if isinstance(event.data.get("subscribe_msg"), Mapping):  # WeChat 订阅通知 consent or send result
        from scrm.services.marketing.wechat_subscribe import record_consent

        await record_consent(tx, identity, event.external_id, event.data["subscribe_msg"])
    if inbox.channel_type == "wechat_oa" and kind in (ChannelEventKind.CONTACT_SUBSCRIBED, ChannelEventKind.INTERACTION):
        from scrm.services.marketing.campaigns import (
            touch_from_event,  # campaign QR codes: attribution, welcome text
        )

        await touch_from_event(tx, inbox, contact, identity, event, now)
    contact.last_seen_at = now if creates else contact.last_seen_at
    tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id, identity_id=identity.id, change=str(kind))
    return IngestOutcome(duplicate=False, contact_id=contact.id)
