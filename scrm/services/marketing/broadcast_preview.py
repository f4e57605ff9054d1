"""A broadcast before it starts: the message as each channel will show it, and a test send to one named contact."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from scrm.db.models import Contact, ContactIdentity, Inbox, utcnow
from scrm.db.models_marketing import Broadcast
from scrm.services.conversations.reply_limits import counted_limits, identities_at_limit
from scrm.services.marketing.broadcast_compose import (
    BroadcastError,
    contact_dict,
    delivery_payload,
    load_inboxes,
    unsubscribe_url,
)
from scrm.services.marketing.broadcast_rules import (
    Decision,
    IdentityInfo,
    InboxInfo,
    check_identity,
    choose,
    render,
)
from scrm.services.marketing.link_tracking import LinkRewriter
from scrm.services.outbox import enqueue_delivery
from scrm.services.uow import Tx

if TYPE_CHECKING:
    from scrm.context import AppContext


async def _contact_and_identities(tx: Tx, contact_id: int, inboxes: list[InboxInfo]) -> tuple[dict[str, Any],
                                                                                             list[IdentityInfo]]:
    c = await tx.session.get(Contact, contact_id)
    if c is None:
        raise BroadcastError("contact not found", 404, "not_found")
    idents = (await tx.session.scalars(select(ContactIdentity).where(
        ContactIdentity.contact_id == contact_id, ContactIdentity.inbox_id.in_([i.id for i in inboxes])))).all()
    return contact_dict(c), [IdentityInfo(i.id, i.inbox_id, i.external_id, i.reachable, i.subscribed,
                                           i.last_inbound_at, i.attributes or {}) for i in idents]


async def send_test(ctx: AppContext, b: Broadcast, contact_id: int, tx: Tx) -> dict[str, Any]:
    """Send the personalized message to one named contact (yourself), under the same channel rules."""
    inboxes = await load_inboxes(tx, list(b.inbox_ids))
    contact, idents = await _contact_and_identities(tx, contact_id, inboxes)
    d = choose(contact, idents, inboxes, utcnow(), tx.channels)
    if d.reason is not None:
        raise BroadcastError(f"this contact cannot receive it: {d.reason}", 409, d.reason)
    assert d.identity is not None and d.inbox is not None
    token = "test" if d.inbox.channel_type == "email" else None
    url = unsubscribe_url(ctx.settings.server.public_url, token) if token else ""
    # A test send keeps the written links: its clicks must not count in the report.
    text, ctype, meta = delivery_payload(b, d, contact, token, ctx.settings.server.public_url,
                                 render(b.template, contact, {"unsubscribe_url": url}))
    inbox = await tx.session.get(Inbox, d.inbox.id)
    identity = await tx.session.get(ContactIdentity, d.identity.id)
    assert inbox is not None and identity is not None
    delivery = enqueue_delivery(tx, inbox=inbox, identity=identity, conversation_id=None, message_id=None, text=text,
                                content_type=ctype, metadata=meta | {"test": True}, kind="broadcast")
    await tx.session.flush()
    return {"delivery_id": delivery.id, "inbox_id": inbox.id, "channel": inbox.channel_type, "text": text}


async def preview(ctx: AppContext, tx: Tx, b: Broadcast, contact_id: int | None) -> list[dict[str, Any]]:
    """What the message looks like on each of the broadcast's channels (for one contact, or a sample)."""
    inboxes = await load_inboxes(tx, list(b.inbox_ids))
    contact: dict[str, Any] = {"name": None, "attributes": {}, "opt_outs": {}}
    idents: list[IdentityInfo] = []
    if contact_id is not None:
        contact, idents = await _contact_and_identities(tx, contact_id, inboxes)
    now = utcnow()
    links = LinkRewriter(b.id, b.template, ctx.settings.server.public_url, now)
    out = []
    for inbox in inboxes:
        ident = next((i for i in idents if i.inbox_id == inbox.id), None)
        caps = tx.channels.capabilities(inbox.channel_type)
        limits = counted_limits(tx.channels, [inbox])
        used = bool(ident and limits and await identities_at_limit(tx.session, limits, now, [ident.id]))
        d = (check_identity(contact, ident, inbox, now, caps, blocked=tx.channels.reply_blocked(
            inbox.channel_type, ident.attributes, ident.last_inbound_at), allowance_used=used)
             if ident else Decision(None, inbox, "message"))
        token = "preview" if inbox.channel_type == "email" else None
        url = unsubscribe_url(ctx.settings.server.public_url, token) if token else ""
        text, ctype, meta = delivery_payload(b, Decision(ident, inbox, d.mode or "message"), contact, token,
                                     ctx.settings.server.public_url,
                                     links.preview(render(b.template, contact, {"unsubscribe_url": url})))
        limit = caps.max_text_length if caps is not None else None
        out.append({"inbox_id": inbox.id, "channel": inbox.channel_type, "text": text, "content_type": ctype,
                    "subject": meta.get("subject"), "headers": meta.get("headers", {}),
                    "parts": -(-len(text) // limit) if limit else 1,
                    "eligible": d.reason is None if ident else None, "skip_reason": d.reason})
    return out
