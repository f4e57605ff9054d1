"""What a pulled kf item means beyond a stored customer message: servicer replies, welcome codes,
session state changes made in WeCom, servicer availability.

Session state seen here is written to the identity (`wecom_kf_state`) before the conversation moves,
so the listener that mirrors conversation changes to WeCom (wecom_session) sees nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from channels.wecom.kf_inbound import KfRecord
from scrm import events as ev
from scrm.db.models import Agent, ContactIdentity, Conversation, Inbox, Message, utcnow
from scrm.domain import Choice, InboundMessage
from scrm.services.conversations import actions as conv_svc
from scrm.services.conversations.ingest import continuable, new_conversation, resolve_identity
from scrm.services.conversations.ingest_writes import preview
from scrm.services.desk import csat
from scrm.services.uow import Tx, unit_of_work
from scrm.services.wecom.session import remember
from scrm.services.wecom.welcome import already_queued, queue_welcome

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.effects")
WELCOME_CODE_TTL = timedelta(seconds=20)  # WeCom accepts a welcome_code for 20 s, once
CLOSING_CODE_TTL = timedelta(seconds=20)  # and the msg_code of a session ended in WeCom (PROTOCOL.md §4)


def _expired(effect: Mapping[str, Any], ttl: timedelta) -> bool:
    at = effect.get("at")
    return bool(at) and datetime.fromisoformat(str(at)) < utcnow() - ttl


def _expires_at(effect: Mapping[str, Any], ttl: timedelta) -> float | None:
    """When the event's code stops working (epoch seconds): the worker does not send it later."""
    at = effect.get("at")
    return (datetime.fromisoformat(str(at)) + ttl).timestamp() if at else None


async def apply_effect(ctx: AppContext, inbox: Inbox, record: KfRecord) -> None:
    """Apply one record's effect in its own transaction."""
    effect = record.effect or {}
    kind = effect.get("kind")
    if kind == "servicer_message":
        await store_servicer_message(ctx, inbox, effect["message"], str(effect.get("servicer_userid") or ""))
    elif kind == "enter_session":
        await send_welcome(ctx, inbox, record)
    elif kind == "session_status":
        await session_changed(ctx, inbox, record)
    elif kind == "servicer_status":
        await servicer_availability(ctx, inbox, effect)


async def agent_for_servicer(tx: Tx, inbox: Inbox, userid: str | None) -> Agent | None:
    """The agent mapped to a WeCom servicer userid in the inbox settings (servicers: login -> userid)."""
    if not userid:
        return None
    logins = [login for login, uid in ((inbox.settings or {}).get("servicers") or {}).items() if uid == userid]
    if not logins:
        return None
    return await tx.session.scalar(select(Agent).where(Agent.login.in_(logins), Agent.active.is_(True)).limit(1))


async def _latest_conversation(tx: Tx, identity: ContactIdentity) -> Conversation | None:
    return await tx.session.scalar(select(Conversation).where(Conversation.identity_id == identity.id)
                                   .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc()).limit(1))


async def store_servicer_message(ctx: AppContext, inbox: Inbox, msg: InboundMessage, servicer: str) -> int | None:
    """A servicer's reply from the WeCom client (origin 5): an agent message by that servicer, stored once."""
    async with unit_of_work(ctx) as tx:
        s = tx.session
        if await s.scalar(select(Message.id).where(Message.inbox_id == inbox.id,
                                                   Message.external_id == msg.external_id)) is not None:
            return None
        now = utcnow()
        identity, contact, _ = await resolve_identity(tx, inbox, msg.sender_id, None, now)
        conv = continuable(inbox, await _latest_conversation(tx, identity))
        if conv is None:
            conv = new_conversation(inbox, identity, contact, msg, now)
            conv.handler = "human"
            s.add(conv)
            await s.flush()
            tx.emit(ev.CONVERSATION_CREATED, conversation_id=conv.id, inbox_id=inbox.id, contact_id=contact.id)
        agent = await agent_for_servicer(tx, inbox, servicer)
        attachments = [{"kind": a.kind, "mime_type": a.mime_type, "source": dict(a.source)} for a in msg.attachments]
        message = Message(conversation_id=conv.id, inbox_id=inbox.id, direction="out", sender_kind="agent",
                          sender_agent_id=agent.id if agent else None, content_type=str(msg.content_type),
                          text=msg.text, attachments=attachments, external_id=msg.external_id,
                          delivery_status="sent", payload=dict(msg.payload) | {"wecom_servicer": servicer},
                          created_at=now, sent_at=msg.sent_at, edit_history=[])
        s.add(message)
        await s.flush()
        if conv.last_activity_at is None or conv.last_activity_at <= now:
            conv.last_activity_at = now
            conv.last_message_preview = preview(msg.text, str(msg.content_type))
            conv.waiting_since = None
        if conv.first_reply_at is None:
            conv.first_reply_at = now
        tx.emit(ev.MESSAGE_CREATED, message_id=message.id, conversation_id=conv.id, inbox_id=inbox.id,
                channel=inbox.channel_type, direction="out", sender_kind="agent", handler=conv.handler,
                content_type=str(msg.content_type))
        tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=inbox.id, changed=["activity"])
        return message.id


async def send_welcome(ctx: AppContext, inbox: Inbox, record: KfRecord) -> int | None:
    """Queue the configured welcome for an enter_session's welcome_code (20 s validity, once), shown in
    the customer's conversation as the bot's message."""
    effect = record.effect or {}
    code = effect.get("welcome_code")
    settings = inbox.settings or {}
    text = settings.get("welcome_text")
    if not code or not text or not record.external_userid:
        return None
    if _expired(effect, WELCOME_CODE_TTL):
        log.info("wecom kf inbox %s: welcome_code of %s expired before it was pulled; no welcome", inbox.id, record.msgid)
        return None
    async with unit_of_work(ctx) as tx:
        if await already_queued(tx, str(code)):
            return None
        identity = await tx.session.scalar(select(ContactIdentity).where(
            ContactIdentity.inbox_id == inbox.id, ContactIdentity.external_id == record.external_userid))
        if identity is None:
            return None
        choices = [Choice(str(o), str(o)) for o in settings.get("welcome_menu") or []]
        delivery = await queue_welcome(tx, inbox, identity, code=str(code), text=str(text), choices=choices,
                                       op={"op": "event_code", "code": code, "scene": "welcome",
                                           "expires_at": _expires_at(effect, WELCOME_CODE_TTL)})
        return delivery.id


async def session_changed(ctx: AppContext, inbox: Inbox, record: KfRecord) -> None:
    """Reflect a change made in WeCom: taken from the pool (human), transferred (new assignee), ended."""
    effect: dict[str, Any] = dict(record.effect or {})
    change = int(effect.get("change_type") or 0)
    if change not in (1, 2, 3) or not record.external_userid:
        log.info("wecom kf inbox %s: session_status_change %s ignored", inbox.id, change)
        return
    async with unit_of_work(ctx) as tx:
        identity = await tx.session.scalar(select(ContactIdentity).where(
            ContactIdentity.inbox_id == inbox.id, ContactIdentity.external_id == record.external_userid))
        conv = await _latest_conversation(tx, identity) if identity is not None else None
        if identity is None or conv is None:
            return
        servicer = effect.get("new_servicer_userid")
        agent = await agent_for_servicer(tx, inbox, servicer)
        agent_id = agent.id if agent else None
        if change == 3:
            remember(identity, 4)
            if conv.status != "resolved":  # resolved in scrm first: its move to 4 carried the closing message
                await _queue_closing(tx, inbox, identity, conv, record)
                await conv_svc.do_set_status(tx, conv.id, None, "resolved")
            return
        # Taken from the pool in WeCom (1) comes with the code of one reply (PROTOCOL.md §4).
        remember(identity, 3, servicer, effect.get("msg_code") if change == 1 else None)
        reason = f"WeCom 接待人员 / servicer {servicer}" if servicer else None
        if conv.handler != "human":
            await conv_svc.do_set_handler(tx, conv.id, agent_id, "human", reason)
        elif agent_id is not None and conv.assignee_id != agent_id:
            await conv_svc.do_assign(tx, conv.id, agent_id, agent_id)


async def _queue_closing(tx: Tx, inbox: Inbox, identity: ContactIdentity, conv: Conversation, record: KfRecord) -> None:
    """A session ended in WeCom (change_type 3): the configured closing message and the satisfaction
    survey as one menu, sent with the event's msg_code through send_msg_on_event once (the delivery is
    keyed by the code) while it is valid (20 s). Without a usable code nothing can reach the customer
    until they write again (kf/send_msg answers 95018 after the end): the survey is not asked and the
    thread says why."""
    effect = record.effect or {}
    code, closing = effect.get("msg_code"), (inbox.settings or {}).get("closing_message")
    unusable = ("WeCom 未给出结束语 code / WeCom sent no closing code" if not code
                else "结束语 code 已过期（20 秒）/ the closing code expired (valid 20 s)"
                if _expired(effect, CLOSING_CODE_TTL) else None)
    if unusable:
        log.info("wecom kf inbox %s: session end %s: %s; no closing message", inbox.id, record.msgid, unusable)
        if await csat.not_wanted(tx, conv) is None:  # wanted, but nothing can carry it: the agents see why
            await conv_svc.add_system_note(tx, conv, f"未发送满意度评价 / satisfaction survey not sent: {unusable}; "
                                                     "会话结束后企业微信拒收 API 消息 / WeCom refuses API messages after "
                                                     "the end (95018)")
        return
    if await already_queued(tx, str(code)):
        return
    survey, question, choices = await csat.survey_for_closing(tx, conv)
    text = "\n\n".join(str(t) for t in (closing, question if survey else None) if t)
    if not text:
        return
    delivery = await queue_welcome(tx, inbox, identity, code=str(code), text=text, choices=choices,
                                   op={"op": "event_code", "code": code, "scene": "closing",
                                       "expires_at": _expires_at(effect, CLOSING_CODE_TTL)})
    if survey is not None:
        delivery.payload = dict(delivery.payload or {}) | {
            "metadata": dict((delivery.payload or {}).get("metadata") or {}) | {"csat_survey_id": survey.id}}


async def servicer_availability(ctx: AppContext, inbox: Inbox, effect: Mapping[str, Any]) -> None:
    """A servicer started (1) or stopped (2) receiving in WeCom: the mapped agent's availability follows."""
    status = int(effect.get("status") or 0)
    async with unit_of_work(ctx) as tx:
        agent = await agent_for_servicer(tx, inbox, effect.get("servicer_userid"))
        if agent is None or status not in (1, 2):
            log.info("wecom kf inbox %s: servicer_status_change of %r ignored (no mapped agent)", inbox.id,
                     effect.get("servicer_userid"))
            return
        agent.availability = "online" if status == 1 else "away"
