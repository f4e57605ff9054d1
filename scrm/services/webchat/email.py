"""Web chat by email: transcripts on request, and agents' replies a visitor left unread.

Both go through the inbox's email inbox (`email_inbox_id`) as ordinary outbox deliveries, so they are
recorded before they are sent and survive a crash like every other message. A visitor who left an
email (pre-chat form, offline form, identity) gets an email identity on that inbox: broadcasts reach
web visitors there, with the email channel's consent rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from scrm.db.models import Agent, Contact, ContactIdentity, Conversation, Inbox, Message, utcnow
from scrm.services.conversations.actions import add_system_note
from scrm.services.outbox import enqueue_delivery
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from channels.web.adapter import WebChatAdapter
    from scrm.context import AppContext

log = logging.getLogger("scrm.webchat.email")


class TranscriptError(Exception):
    """A transcript cannot be sent (no email inbox, nothing to send); `code` names why."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
TRANSCRIPT_LIMIT = 500
FOLLOWUP_EVERY = 15.0  # seconds between sweeps for unread replies
FOLLOWUP_MAX_AGE = timedelta(days=2)
WHO = {"zh": {"visitor": "您", "bot": "机器人", "agent": "客服", "system": "系统"},
       "en": {"visitor": "You", "bot": "Bot", "agent": "Agent", "system": "System"}}


async def _email_inbox(tx: Tx, settings: Any) -> Inbox | None:
    if settings.email_inbox_id is None:
        return None
    inbox = await tx.session.get(Inbox, settings.email_inbox_id)
    return inbox if inbox is not None and inbox.active and inbox.channel_type == "email" else None


async def email_identity(tx: Tx, email_inbox: Inbox, contact_id: int, email: str) -> ContactIdentity:
    """The contact's identity on the email inbox for `email` (created when new; another contact's
    identity for the same address stays theirs)."""
    address = email.strip()
    found = await tx.session.scalar(select(ContactIdentity).where(
        ContactIdentity.inbox_id == email_inbox.id, func.lower(ContactIdentity.external_id) == address.lower()))
    if found is not None:
        return found
    identity = ContactIdentity(inbox_id=email_inbox.id, external_id=address, contact_id=contact_id, attributes={})
    tx.session.add(identity)
    await tx.session.flush()
    return identity


async def link_email(ctx: AppContext, adapter: WebChatAdapter, contact_id: int, email: str) -> None:
    """Give the contact an identity on the inbox's email inbox (nothing without one)."""
    for _ in range(2):  # a concurrent form for the same address may win the unique constraint once
        try:
            async with unit_of_work(ctx) as tx:
                inbox = await _email_inbox(tx, adapter.settings)
                if inbox is not None:
                    await email_identity(tx, inbox, contact_id, email)
            return
        except Exception as exc:  # noqa: BLE001
            if "unique" not in str(exc).lower() and "integrity" not in type(exc).__name__.lower():
                raise


def _line(m: Message, agent: str | None, lang: str, tz: str) -> str:
    who = WHO[lang]["visitor" if m.direction == "in" else m.sender_kind]
    if m.sender_kind == "agent" and agent:
        who = agent
    when = m.created_at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
    body = m.text or ""
    files = ", ".join(str(a.get("filename") or a.get("kind")) for a in m.attachments or [] if isinstance(a, dict))
    if files:
        body = f"{body} [{files}]".strip()
    return f"[{when}] {who}: {body}"


async def send_transcript(ctx: AppContext, web_inbox: Inbox, adapter: WebChatAdapter, identity_id: int, email: str,
                          lang: str) -> None:
    """Queue the visitor's latest conversation as a mail to `email` (409 without an email inbox)."""
    settings: Any = adapter.settings
    tz = ctx.settings.display.timezone
    async with unit_of_work(ctx) as tx:
        email_inbox = await _email_inbox(tx, settings)
        if email_inbox is None:
            raise TranscriptError("transcripts by email are not set up for this chat", "no_email_inbox")
        conv = await tx.session.scalar(select(Conversation).where(Conversation.identity_id == identity_id)
                                       .order_by(Conversation.id.desc()).limit(1))
        if conv is None:
            raise TranscriptError("there is no conversation to send yet", "no_conversation")
        rows = (await tx.session.execute(
            select(Message, Agent.display_name).outerjoin(Agent, Agent.id == Message.sender_agent_id)
            .where(Message.conversation_id == conv.id, Message.private.is_(False), Message.content_type != "event")
            .order_by(Message.id).limit(TRANSCRIPT_LIMIT))).all()
        title = settings.title.pick(lang)
        head = f"{title} — 聊天记录" if lang == "zh" else f"{title} — chat transcript"
        text = "\n".join([head, "", *(_line(m, name, lang, tz) for m, name in rows)])
        identity = await email_identity(tx, email_inbox, conv.contact_id, email)
        enqueue_delivery(tx, inbox=email_inbox, identity=identity, conversation_id=None, message_id=None, text=text,
                         metadata={"subject": head}, automatic=True, kind="notice")
        await add_system_note(tx, conv, f"聊天记录已发送至 {email} / Transcript emailed to {email}")


async def email_unread_replies(ctx: AppContext, now: Any = None) -> int:
    """Mail agents' replies that a visitor with an email left unread: one mail per conversation, once."""
    from channels.web.config import WebSettings

    now = now or utcnow()
    sent = 0
    async with ctx.db.session() as s:
        inboxes = (await s.scalars(select(Inbox).where(Inbox.channel_type == "web", Inbox.active.is_(True)))).all()
    for web_inbox in inboxes:
        settings = WebSettings.model_validate(web_inbox.settings or {})
        if settings.email_inbox_id is None:
            continue
        due = now - timedelta(seconds=settings.email_after_seconds)
        async with ctx.db.session() as s:
            convs = sorted(set((await s.scalars(select(Message.conversation_id).where(
                Message.inbox_id == web_inbox.id, Message.direction == "out", Message.sender_kind == "agent",
                Message.private.is_(False), Message.delivery_status.in_(("sent", "delivered")),
                Message.created_at <= due, Message.created_at >= now - FOLLOWUP_MAX_AGE))).all()))
        for cid in convs:
            sent += await _follow_up(ctx, web_inbox, settings, cid, due)
    return sent


async def _follow_up(ctx: AppContext, web_inbox: Inbox, settings: Any, conversation_id: int, due: Any) -> int:
    async with unit_of_work(ctx) as tx:
        email_inbox = await _email_inbox(tx, settings)
        conv = await tx.session.get(Conversation, conversation_id, with_for_update=True)
        if email_inbox is None or conv is None:
            return 0
        contact = await tx.session.get(Contact, conv.contact_id)
        meta = dict(conv.meta or {})
        upto = int(meta.get("webchat_emailed_upto") or 0)
        rows = (await tx.session.execute(
            select(Message, Agent.display_name).outerjoin(Agent, Agent.id == Message.sender_agent_id).where(
                Message.conversation_id == conv.id, Message.id > upto, Message.direction == "out",
                Message.sender_kind == "agent", Message.private.is_(False),
                Message.delivery_status.in_(("sent", "delivered")), Message.created_at <= due)
            .order_by(Message.id))).all()
        if not rows:
            return 0
        meta["webchat_emailed_upto"] = rows[-1][0].id  # recorded with the delivery: mailed once
        conv.meta = meta
        if contact is None or not contact.email:
            return 0
        lang = "en" if (contact.language or "").startswith("en") else "zh"
        title = settings.title.pick(lang)
        head = f"{title}：您有新的回复" if lang == "zh" else f"{title}: you have a new reply"
        tz = ctx.settings.display.timezone
        text = "\n".join([head, "", *(_line(m, name, lang, tz) for m, name in rows)])
        identity = await email_identity(tx, email_inbox, contact.id, contact.email)
        enqueue_delivery(tx, inbox=email_inbox, identity=identity, conversation_id=None, message_id=None, text=text,
                         metadata={"subject": head}, automatic=False, kind="notice")
        await add_system_note(tx, conv, f"未读回复已通过邮件发送 / Unread replies emailed to {contact.email}")
    return 1


async def run_email_followups(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job: every few seconds, mail unread agent replies (one process at a time, by lease)."""
    while not stop.is_set():
        try:
            await email_unread_replies(ctx)
        except Exception:  # noqa: BLE001 - a database hiccup: try again next round
            log.exception("mailing unread web chat replies failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FOLLOWUP_EVERY)
