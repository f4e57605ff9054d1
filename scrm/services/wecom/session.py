"""The WeCom session state (service_state) kept in step with the conversation's handoff.

handoff "in_step" (default): bot ↔ 1 智能助手, queue ↔ 2 待接入池, human ↔ 3 人工 (with the agent's WeCom
userid: settings.servicers maps agent logins to userids, default_servicer_userid otherwise), resolved ↔ 4
(the move's closing code carries the closing message and the satisfaction survey as one menu: after the
end WeCom refuses kf/send_msg until the customer writes again).
WeCom lets the API send only in states 0 and 1 (95018 otherwise), so in state 3 the agent replies from
the WeCom client (the reply comes back through kf/sync_msg, origin 5, and is stored as theirs) and the
reply box says so instead of failing later; except the first reply after the move into 3, which goes
through the msg_code that move returned (send_msg_on_event, one text within 48 h). An agent without a WeCom userid keeps the session in 1
(the API can send their replies); one that waits in the pool (2) needs a mapped agent.
handoff "api_only": scrm is the desk, the session stays 1 (bot, queue, human) and 4 on resolve; the
trade-off is that WeCom's own client and statistics see the whole session as 智能助手 and the 5-message
rule applies to agents' replies too.

Changes go through the outbox (kind "wecom_state"), in order with the messages to the same customer: a
bot's handoff message leaves before the move to the pool that would forbid it. The state written on the
identity is the one asked for; a refused change puts it back (on_state_failed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select

from channels.wecom.session import (
    STATE_NAMES,
    TEXT_UNSENT,
    code_used,
    current_state,
    remembered,
    reply_code,
    reply_code_key,
    with_reply_code,
)
from scrm.db.models import Agent, ContactIdentity, Conversation, Delivery, Inbox, InboxState, Message
from scrm.domain import Choice
from scrm.event_batch import before_reading_again
from scrm.services.conversations import actions as conv_svc
from scrm.services.desk import csat
from scrm.services.outbox import enqueue_delivery, enqueue_message
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.wecom.session")
STATE_KIND = "wecom_state"  # a delivery that changes the session state (and may carry the message its code allows)


def remember(identity: ContactIdentity, state: int, servicer: str | None = None, code: str | None = None) -> None:
    """Write the session state (and servicer in state 3, with the move's msg_code if given) on the identity."""
    identity.attributes = remembered(identity.attributes or {}, state, servicer)
    if code and state == 3:
        identity.attributes = with_reply_code(identity.attributes, code, servicer)


async def _servicer(tx: Tx, inbox: Inbox, agent_id: int | None) -> str | None:
    settings = inbox.settings or {}
    if agent_id is not None:
        agent = await tx.session.get(Agent, agent_id)
        mapped = (settings.get("servicers") or {}).get(agent.login) if agent else None
        if mapped:
            return str(mapped)
    default = settings.get("default_servicer_userid")
    return str(default) if default else None


@dataclass(frozen=True)
class Handoff:
    """What the session state follows: a conversation's status, handler and assignee (as read at a time)."""

    status: str
    handler: str
    assignee_id: int | None

    @classmethod
    def of(cls, conv: Conversation) -> Handoff:
        return cls(conv.status, conv.handler, conv.assignee_id)


async def target_state(tx: Tx, inbox: Inbox, conv: Handoff, current: int) -> tuple[int | None, str | None, str | None]:
    """(state, servicer userid, message to send with the event code) the conversation calls for; None: stay."""
    settings = inbox.settings or {}
    in_step = settings.get("handoff", "in_step") == "in_step"
    if conv.status == "resolved":
        return 4, None, settings.get("closing_message")
    if conv.handler == "bot" or not in_step:
        return 1, None, None
    if conv.handler == "queue":
        return 2, None, settings.get("queue_message")
    servicer = await _servicer(tx, inbox, conv.assignee_id)
    if servicer:
        return 3, servicer, None
    return (1, None, None) if current in (0, 1) else (None, None, None)


async def mirror(ctx: AppContext, conversation_id: int, *, by: str | None = None) -> int | None:
    """Queue the service_state change this conversation's handoff calls for; returns the delivery id.

    A move to 已结束 (4) carries the closing message and the satisfaction survey in one message sent with
    the move's closing code (Capabilities.survey_on_close): after the end WeCom refuses kf/send_msg, so
    a survey queued on its own would fail with 95018. `by` "csat": a rating closed again what the answer
    reopened, so no second closing message or survey."""
    async with unit_of_work(ctx) as tx:
        await before_reading_again(tx.session, conversation_id)
        conv = await tx.session.get(Conversation, conversation_id, populate_existing=True)
        if conv is None:
            return None
        inbox = await tx.session.get(Inbox, conv.inbox_id)
        if inbox is None or inbox.channel_type != "wecom_kf" or not inbox.active:
            return None
        identity = await tx.session.get(ContactIdentity, conv.identity_id, with_for_update=True)
        assert identity is not None
        delivery = await _queue_state(tx, conv, inbox, identity, Handoff.of(conv), by)
        if delivery is None:
            return None
        await tx.session.flush()
        return delivery.id


async def _queue_state(tx: Tx, conv: Conversation, inbox: Inbox, identity: ContactIdentity, handoff: Handoff,
                       by: str | None) -> Delivery | None:
    """mirror's work once the identity is locked: the state `handoff` calls for, remembered and queued."""
    current, servicer_now = current_state(dict(identity.attributes or {}), last_inbound_at=identity.last_inbound_at)
    target, servicer, text = await target_state(tx, inbox, handoff, current)
    if target is None:
        await conv_svc.add_system_note(
            tx, conv, f"WeCom: 会话仍在{STATE_NAMES.get(current)}；请在渠道设置 servicers 中把该客服映射到企业微信 userid "
                      f"/ the WeCom session stays {current}: map this agent to a WeCom userid (servicers)")
        return None
    if target == current and (target != 3 or servicer == servicer_now):
        return None
    remember(identity, target, servicer)
    op = {"op": "service_state", "service_state": target, "servicer_userid": servicer,
          "from": current, "from_servicer": servicer_now}
    metadata: dict[str, Any] = {"wecom": op}
    choices: list[Choice] = []
    if target == 4 and by == "csat":
        text = None
    elif target == 4:
        survey, question, choices = await csat.survey_for_closing(tx, conv)
        if survey is not None:
            text = "\n\n".join(t for t in (text, question) if t)
            metadata["csat_survey_id"] = survey.id
    if text:  # shown in the thread, so an agent sees it sent or failed with WeCom's reason
        _, delivery = await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity,
                                            sender_kind="system", text=text, choices=choices, automatic=True,
                                            metadata=metadata, payload={"wecom_state": target})
        delivery.kind = STATE_KIND
        return delivery
    return enqueue_delivery(tx, inbox=inbox, identity=identity, conversation_id=conv.id, message_id=None, text=None,
                            content_type="event", automatic=True, kind=STATE_KIND, metadata=metadata)


_AT_END = "wecom_session_mirrors"  # SharedTransaction.facts: the batch's mirrors left to its end


async def mirror_at_batch_end(ctx: AppContext, conversation_id: int, *, by: str | None = None) -> None:
    """mirror(), left to the end of the event consumer's batch when called in one (still in its transaction).

    mirror locks the conversation's identity (its session state is read, then written); ingest writes
    that row for each new customer message (last_inbound_at). Taken where the listener is called, the lock
    was held for the rest of the batch (hundreds of ms under a backlog, at the worker's lowered priority),
    and the pull of a 微信客服 account stored nothing meanwhile: its next page had a message from a customer
    whose conversation.created the batch had worked. At the end the batch's identities are locked with one
    statement, so the locks last from there until the commit only.
    The handoff mirrored is the one read now, as the event's listener (a later listener of the batch may
    change the conversation again: a rating that closes what the customer's answer reopened mirrors as
    its own event, with its `by`). Deliveries it queues still join the batch's (inserted after its
    listeners). A batch retried event by event (savepoints) mirrors in place: the savepoint must hold the
    writes."""
    shared = ctx.db.joined()
    if shared is None or shared.savepoints:
        await mirror(ctx, conversation_id, by=by)
        return
    async with unit_of_work(ctx) as tx:
        await before_reading_again(tx.session, conversation_id)
        conv = await tx.session.get(Conversation, conversation_id, populate_existing=True)
        if conv is None:
            return
        inbox = await tx.session.get(Inbox, conv.inbox_id)
        if inbox is None or inbox.channel_type != "wecom_kf" or not inbox.active:
            return
        handoff = Handoff.of(conv)
    pending: list[tuple[int, str | None, Handoff]] | None = shared.facts.get(_AT_END)
    if pending is None:
        pending = shared.facts[_AT_END] = []
        shared.at_end.append(lambda: _mirror_pending(ctx, pending))
    pending.append((conversation_id, by, handoff))


async def _mirror_pending(ctx: AppContext, pending: list[tuple[int, str | None, Handoff]]) -> None:
    """The batch's mirrors in the order of their events, their identities locked in one statement (in id order)."""
    async with unit_of_work(ctx) as tx:
        s = tx.session
        convs = {cid: await s.get(Conversation, cid) for cid, _, _ in pending}  # the batch's: from its identity map
        ids = sorted({c.identity_id for c in convs.values() if c is not None})
        identities = {i.id: i for i in (await s.scalars(
            select(ContactIdentity).where(ContactIdentity.id.in_(ids)).order_by(ContactIdentity.id)
            .with_for_update().execution_options(populate_existing=True))).all()}
        for cid, by, handoff in pending:
            conv = convs[cid]
            identity = identities.get(conv.identity_id) if conv is not None else None
            inbox = await s.get(Inbox, conv.inbox_id) if conv is not None else None
            if conv is None or identity is None or inbox is None:
                continue
            await _queue_state(tx, conv, inbox, identity, handoff, by)


async def on_state_failed(ctx: AppContext, delivery_id: int) -> None:
    """WeCom refused a state change, or made it but the message riding on its code could not be sent:
    remember the state WeCom is in, drop a survey that never left, and tell the agents why."""
    async with unit_of_work(ctx) as tx:
        delivery = await tx.session.get(Delivery, delivery_id)
        if delivery is None or delivery.kind != STATE_KIND or delivery.status != "failed":
            return
        metadata = (delivery.payload or {}).get("metadata") or {}
        op = metadata.get("wecom") or {}
        moved = delivery.error_code == TEXT_UNSENT
        identity = await tx.session.get(ContactIdentity, delivery.identity_id) if delivery.identity_id else None
        if identity is not None and isinstance(op.get("from"), int) and not moved:
            remember(identity, op["from"], op.get("from_servicer"))
        if isinstance(metadata.get("csat_survey_id"), int):
            await csat.not_sent(tx, metadata["csat_survey_id"])
        conv = await tx.session.get(Conversation, delivery.conversation_id) if delivery.conversation_id else None
        if conv is not None:
            target: Any = op.get("service_state")
            name = STATE_NAMES.get(target, target)
            if moved:
                note = (f"WeCom 会话已切换到{name}，但随之发送的消息未发出 / the WeCom session is {target} now, but the "
                        f"message sent with it did not go out: {delivery.last_error}")
            else:
                note = (f"WeCom 拒绝切换会话状态到 {name} / WeCom refused the session state {target}: "
                        f"{delivery.last_error or 'unknown reason'}")
            await conv_svc.add_system_note(tx, conv, note)


async def on_code_failed(ctx: AppContext, delivery_id: int) -> None:
    """A message sent with an event code (welcome, closing) failed: a survey it carried was never asked
    (the message itself shows the reason in the thread)."""
    async with unit_of_work(ctx) as tx:
        delivery = await tx.session.get(Delivery, delivery_id)
        survey_id = ((delivery.payload or {}).get("metadata") or {}).get("csat_survey_id") if delivery else None
        if delivery is not None and delivery.status == "failed" and isinstance(survey_id, int):
            await csat.not_sent(tx, survey_id)


async def on_state_sent(ctx: AppContext, delivery_id: int) -> None:
    """A move into 人工 went through: remember the msg_code WeCom returned for the agent's first reply."""
    async with unit_of_work(ctx) as tx:
        delivery = await tx.session.get(Delivery, delivery_id)
        if delivery is None or delivery.kind != STATE_KIND or delivery.identity_id is None:
            return
        row = await tx.session.get(InboxState, (delivery.inbox_id, reply_code_key(delivery.recipient_id)))
        if row is None:
            return
        entry = (row.value or {}).get("v") or {}
        await tx.session.delete(row)
        identity = await tx.session.get(ContactIdentity, delivery.identity_id, with_for_update=True)
        if identity is None or not entry.get("code"):
            return
        state, servicer = current_state(dict(identity.attributes or {}))
        if state == 3 and (not entry.get("servicer") or entry.get("servicer") == servicer):
            identity.attributes = with_reply_code(identity.attributes or {}, str(entry["code"]), servicer)


# The conversation's identity (its attributes) and the message's msgid, read without loading ORM objects.
_CODE_CHECK = (
    select(ContactIdentity.id.label("identity_id"), ContactIdentity.attributes, Message.external_id)
    .select_from(Conversation)
    .join(ContactIdentity, ContactIdentity.id == Conversation.identity_id)
    .join(Message, Message.id == bindparam("msg"))
    .where(Conversation.id == bindparam("conv"), Message.conversation_id == Conversation.id)
)


async def reply_code_taken(ctx: AppContext, conversation_id: int, message_id: int) -> None:
    """An agent's message in 人工: the one reply the session's code allows is taken (later ones are refused
    with the reason, before they are sent)."""
    async with unit_of_work(ctx) as tx:
        # Nearly every such message (each bot answer) finds no code: one plain read of the identity's
        # attributes and the message's msgid says so, instead of three ORM loads and a row lock per message.
        found = (await tx.session.execute(_CODE_CHECK, {"conv": conversation_id, "msg": message_id})).first()
        if found is None or found.external_id is not None or reply_code(found.attributes or {}) is None:
            return  # no code to take; a servicer's reply from the WeCom client (stored with its msgid) takes none
        identity = await tx.session.get(ContactIdentity, found.identity_id, with_for_update=True)
        if identity is not None and reply_code(identity.attributes or {}) is not None:
            identity.attributes = code_used(identity.attributes or {}, message_id)


async def latest_state_delivery(ctx: AppContext, conversation_id: int) -> Delivery | None:
    """The newest session-state change queued for a conversation (tests, status display)."""
    async with ctx.db.session() as s:
        return await s.scalar(select(Delivery).where(Delivery.conversation_id == conversation_id,
                                                     Delivery.kind == STATE_KIND).order_by(Delivery.id.desc()).limit(1))
