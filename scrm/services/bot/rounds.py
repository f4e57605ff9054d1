"""The bot in the application: runs the pure flow engine on a conversation and applies its actions.

One round = one input (customer message, button click, HTTP answer, timer) for one conversation,
in ONE transaction: lock the conversation row, re-check that the bot still handles it (an agent who
took over in between wins), run the engine on the persisted `bot_state`, write every action
(replies into the outbox, attributes, tags, ticket, handoff, unanswered question) together with the
new state. HTTP calls requested by a flow run after that commit, with a timeout, and their answer
is fed back as the next round. Because the state lives in the database, a restart mid-flow
continues where the conversation was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import func, select

from bot_flows.actions import (
    AddTag,
    BotInput,
    BotResult,
    CallHttp,
    Handoff,
    OpenTicket,
    RecordUnanswered,
    SendReply,
    SetAttribute,
)
from bot_flows.conditions import BusinessHours
from bot_flows.engine import EngineConfig, FlowEngine, MatcherLookup
from bot_flows.flow_model import FlowSet
from bot_flows.flows import load_flows
from scrm import events as ev
from scrm.db.database import batch_fact
from scrm.db.models import (
    Contact,
    ContactIdentity,
    ContactTag,
    Conversation,
    Inbox,
    Message,
    UnansweredQuestion,
    utcnow,
)
from scrm.db.models_desk import FaqOutcome
from scrm.services.bot.config import ROOT, load_bot_config
from scrm.services.bot.faq import get_index, matcher_config
from scrm.services.bot.state import APP_KEY, answered_up_to
from scrm.services.conversations import actions as conv_svc
from scrm.services.conversations.turns import take_turn
from scrm.services.outbox import batch_rows, enqueue_batch_message, enqueue_message, passive_hold
from scrm.services.tickets.records import PRIORITIES, create_ticket, ticket_number_text
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.bot")
_RUNTIME_KEY = "bot_runtime"
_APP = APP_KEY  # the application's own bookkeeping inside bot_state (hidden from the engine)
MAX_HTTP_CHAIN = 5
FAQ_OUTCOMES = ("answer", "picked", "clarify", "reject", "none")
HANDOFF_REASONS = {
    "customer_request": "客户要求转人工 / customer asked for an agent",
    "bot_unanswered": "机器人未能回答 / the bot could not answer",
    "after_hours": "非工作时间留言 / message left after hours",
}


def _resolve(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else ROOT / path


@dataclass
class BotRuntime:
    """What the bot needs in a process: config, flows, the FAQ index and a clock (tests move it)."""

    config: dict[str, Any]
    flows: FlowSet
    hours_override: BusinessHours | None
    clock: Callable[[], datetime] = utcnow
    max_timeout: float = 0.0
    enabled: bool = True  # false: the bot answers nobody (every conversation waits for agents)
    extra: dict[str, Any] = field(default_factory=dict)

    def engine(self, matcher: Any, hours: BusinessHours | None) -> FlowEngine:
        """An engine for one round (cheap: flows are parsed once; the hours may change at run time)."""
        cfg = EngineConfig(default_language=str(self.config.get("default_language", "zh")), business_hours=hours)
        return FlowEngine(self.flows, MatcherLookup(matcher), cfg)


def get_runtime(ctx: AppContext) -> BotRuntime:
    """The process's bot runtime for this context (flows are loaded and validated once)."""
    rt: BotRuntime | None = ctx.extras.get(_RUNTIME_KEY)
    if rt is None:
        cfg = load_bot_config()
        matcher_config(cfg)  # a bad [matcher] value stops the start with its name, like a bad flow
        flows = load_flows(_resolve(str(cfg.get("flows_dir", "config/flows"))))
        hours_cfg = cfg.get("business_hours")
        hours = BusinessHours.from_config(hours_cfg) if hours_cfg else None
        max_timeout = max((s.timeout.seconds for f in flows.flows.values() for s in f.states.values() if s.timeout),
                          default=0.0)
        rt = ctx.extras[_RUNTIME_KEY] = BotRuntime(cfg, flows, hours, max_timeout=float(max_timeout),
                                                   enabled=bool(cfg.get("enabled", True)))
    return rt


async def _business_hours(rt: BotRuntime, tx: Tx) -> BusinessHours:
    if rt.hours_override is not None:
        return rt.hours_override
    try:
        from scrm.services.desk.settings import business_hours
    except ImportError:
        from scrm.services.desk.business_time import hours_from_config

        return hours_from_config(None)
    return await business_hours(tx.session)


def _has_buttons(tx: Tx, inbox: Inbox) -> bool:
    caps = tx.channels.capabilities(inbox.channel_type)
    return bool(caps is not None and caps.buttons)


async def _contact_view(tx: Tx, contact: Contact) -> dict[str, Any]:
    batch_tags = batch_fact(tx.session, "contact_tags")  # read for the consumer's whole batch
    if batch_tags is not None and contact.id in batch_tags:
        tags = batch_tags[contact.id]
    else:
        tags = (await tx.session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id))).all()
    return {"name": contact.name, "language": contact.language, "attributes": dict(contact.attributes or {}),
            "tags": list(tags)}


# --- inbound messages -----------------------------------------------------------------------------


def should_answer(message: Message) -> bool:
    """The bot answers customer messages only: no auto-replies, no opt-out keywords, no channel events."""
    if message.direction != "in" or message.sender_kind != "contact" or message.private:
        return False
    if (message.payload or {}).get("auto_submitted") or message.content_type == "event":
        return False
    try:
        from scrm.services.marketing.optout import is_opt_out_keyword
    except ImportError:
        return True
    return not is_opt_out_keyword(message.text)


async def _earlier_customer_message(tx: Tx, conversation_id: int, message_id: int) -> bool:
    """Whether the customer wrote in the conversation before `message_id` (its first message is greeted)."""
    first = batch_fact(tx.session, "first_customer_message")  # read for the consumer's whole batch
    if first is not None and conversation_id in first:
        known = first[conversation_id]
        return known is not None and known < message_id
    return bool(await tx.session.scalar(select(func.count()).select_from(Message).where(
        Message.conversation_id == conversation_id, Message.direction == "in", Message.id < message_id,
        Message.content_type != "event")))


async def handle_inbound(ctx: AppContext, message_id: int, conversation_id: int | None = None) -> None:
    """React to a stored customer message (called by the listener for message.created, which knows
    the conversation: `build` checks the message really belongs to it)."""
    rt = get_runtime(ctx)
    index = await get_index(ctx, rt.config)
    calls: list[CallHttp] = []
    conv_id: int | None = None

    async def build(tx: Tx, conv: Conversation) -> BotInput | None:
        nonlocal conv_id
        message = await tx.session.get(Message, message_id)
        if message is None or message.conversation_id != conv.id or not should_answer(message):
            return None
        last_in = answered_up_to(conv.bot_state)
        if message_id <= last_in:
            return None  # already answered (every process sees the event when Redis carries it)
        # The bot answered an earlier message of this conversation: not the first, no need to count.
        earlier = last_in or await _earlier_customer_message(tx, conv.id, message.id)
        payload = message.payload or {}
        choice = payload.get("choice")
        conv_id = conv.id
        await index.prepare(message.text)  # the re-ranker's model runs in a worker thread, not on the loop
        return BotInput(kind="postback" if choice or message.content_type == "postback" else "message",
                        now=rt.clock(), text=message.text, choice=str(choice) if choice else None,
                        is_first_message=not earlier)

    cid = conversation_id
    if cid is None:
        async with ctx.db.session() as s:
            cid = await s.scalar(select(Message.conversation_id).where(Message.id == message_id))
        if cid is None:
            return
    calls = await run_round(ctx, rt, index.matcher, cid, build, mark_in=message_id)
    await _follow_http(ctx, rt, index.matcher, cid, calls)


async def run_round(
    ctx: AppContext, rt: BotRuntime, matcher: Any, conversation_id: int,
    build: Callable[[Tx, Conversation], Any], *, mark_in: int | None = None,
) -> list[CallHttp]:
    """One engine round in one transaction; returns the HTTP calls to make after commit."""
    async with unit_of_work(ctx) as tx:
        conv = await take_turn(tx, conversation_id)  # not its row: ingest must not wait for the round
        if conv is None or conv.handler != "bot":
            return []  # queue / human: the bot never talks over an agent
        inp = await build(tx, conv)
        if inp is None:
            return []
        inbox = await tx.session.get(Inbox, conv.inbox_id)
        identity = await tx.session.get(ContactIdentity, conv.identity_id)
        contact = await tx.session.get(Contact, conv.contact_id)
        assert inbox is not None and identity is not None and contact is not None
        hours = await _business_hours(rt, tx)
        inp = BotInput(kind=inp.kind, now=inp.now, text=inp.text, choice=inp.choice,
                       is_first_message=inp.is_first_message, channel_has_buttons=_has_buttons(tx, inbox),
                       contact=await _contact_view(tx, contact), business_hours_open=hours.is_open(inp.now),
                       data=inp.data)
        state = {k: v for k, v in (conv.bot_state or {}).items() if k != _APP}
        app = dict((conv.bot_state or {}).get(_APP) or {})
        inp = faq_button_as_question(state, inp, matcher)
        result = rt.engine(matcher, hours).handle(state, inp)
        if mark_in is not None:
            app["last_in"] = mark_in
        # Its platform callback may still be waiting to carry the answer (WeChat passive reply).
        hold = passive_hold(await tx.session.get(Message, mark_in)) if mark_in is not None else None
        calls = await apply_actions(tx, conv, inbox, identity, contact, result, hold_until=hold)
        conv.bot_state = {**result.state, _APP: app}
    return calls


def faq_button_as_question(state: dict[str, Any], inp: BotInput, matcher: Any) -> BotInput:
    """A button under an answer that links to another entry ("faq:<id>", by click, number or label)
    asks that entry's question: the engine only answers "faq:" payloads it offered as candidates."""
    if inp.kind not in ("message", "postback"):
        return inp
    payload = inp.choice
    offered = state.get("choices") or []
    said = (inp.text or "").strip().rstrip(".。")
    if not payload and said:
        if said.isdigit() and 1 <= int(said) <= len(offered):
            payload = str(offered[int(said) - 1][1])
        else:
            payload = next((str(p) for label, p in offered if str(label).strip() == said), None)
    if not payload or not payload.startswith("faq:"):
        return inp
    key = payload[4:]
    entry = matcher.get(key)
    if entry is None or key in (state.get("faq_candidates") or {}):
        return inp
    return replace(inp, kind="message", text=entry.question, choice=None)


async def apply_actions(tx: Tx, conv: Conversation, inbox: Inbox, identity: ContactIdentity, contact: Contact,
                        result: BotResult, *, hold_until: datetime | None = None) -> list[CallHttp]:
    """Write the engine's actions in the caller's transaction; returns the HTTP calls for later.

    In a consumer's batch on PostgreSQL the bot's messages, deliveries, FAQ outcomes and unanswered
    questions are plain rows the batch inserts together (outbox.BatchRows), not ORM objects."""
    window_open = conv_svc.reply_window(inbox, identity, tx.channels)["open"]
    rows = batch_rows(tx)
    number: str | None = None
    calls: list[CallHttp] = []
    faq_seen: list[tuple[Any, dict[str, Any]]] = []  # one outcome dict may ride on RecordUnanswered and its reply

    async def send(text: str, choices: Any = (), faq: Any = None) -> int | None:
        if number is not None:
            text = text.replace("{ticket_number}", number)
        if not window_open or not text.strip():
            log.info("bot reply not sent on conversation %s: the channel cannot reach the contact", conv.id)
            return None
        if await conv_svc.allowance_used_up(tx, conv, inbox, identity):  # WeCom 微信客服: 5 within 48 h
            return None
        payload = {"faq": dict(faq)} if faq else None
        if rows is not None:
            return await enqueue_batch_message(tx, inbox=inbox, conversation=conv, identity=identity,
                                               sender_kind="bot", text=text, choices=tuple(choices), automatic=True,
                                               payload=payload, not_before=hold_until)
        message, _ = await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="bot",
                                           text=text, choices=tuple(choices), automatic=True, payload=payload,
                                           not_before=hold_until)
        return message.id

    for action in result.actions:
        faq = getattr(action, "faq", None)
        if isinstance(action, SendReply):
            message_id = await send(action.text, action.choices, faq)
            if faq:
                record_faq_outcome(conv, faq, message_id, faq_seen)
        elif isinstance(action, SetAttribute):
            _set_attribute(tx, contact, action.key, action.value)
        elif isinstance(action, AddTag):
            tag = action.tag.strip()[:64]
            if tag and await tx.session.get(ContactTag, (contact.id, tag)) is None:
                tx.session.add(ContactTag(contact_id=contact.id, tag=tag))
                tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id, change="tag")
        elif isinstance(action, OpenTicket):
            ticket = await create_ticket(
                tx, subject=action.subject or conv.last_message_preview or f"Conversation {conv.id}",
                description=action.description or None, contact_id=contact.id, conversation_id=conv.id,
                priority=action.priority if action.priority in PRIORITIES else "normal",
                fields=dict(action.fields), inbox_id=inbox.id, opened_by="bot")
            number = ticket_number_text(ticket.number)
        elif isinstance(action, Handoff):
            await send(action.message)
            reason = HANDOFF_REASONS.get(action.reason, action.reason) or None
            await conv_svc.do_set_handler(tx, conv.id, None, "queue", reason)
        elif isinstance(action, RecordUnanswered):
            if action.text.strip():
                question = {"conversation_id": conv.id, "text": action.text.strip()[:2000], "resolved": False,
                            "created_at": utcnow()}
                if rows is not None:
                    rows.add("unanswered_questions", question)
                else:
                    tx.session.add(UnansweredQuestion(**question))
            if faq:
                record_faq_outcome(conv, faq, None, faq_seen)
        elif isinstance(action, CallHttp):
            calls.append(action)
        # ScheduleTimeout: the due time is in the engine state; run_timeouts finds it.
    for _, outcome in faq_seen:  # written once the round knows each one's message
        if rows is not None:
            rows.add("desk_faq_outcomes", outcome)
        else:
            tx.session.add(FaqOutcome(**outcome))
    return calls


def record_faq_outcome(conv: Conversation, faq: Any, message_id: int | None,
                       seen: list[tuple[Any, dict[str, Any]]]) -> None:
    """One FaqOutcome row per outcome the engine reported (the FAQ answer rate in reports), linked
    to the bot message that carried it; collected in `seen` (the round writes them)."""
    for known, row in seen:
        if known is faq:
            if row["message_id"] is None and message_id is not None:
                row["message_id"] = message_id
            return
    outcome = str(faq.get("outcome") or "")
    if outcome not in FAQ_OUTCOMES:
        return
    confidence = faq.get("confidence")
    seen.append((faq, {
        "conversation_id": conv.id, "inbox_id": conv.inbox_id, "message_id": message_id, "outcome": outcome,
        "entry_key": str(faq["entry"])[:120] if faq.get("entry") else None,
        "confidence": float(confidence) if isinstance(confidence, int | float) else None, "created_at": utcnow()}))


def _set_attribute(tx: Tx, contact: Contact, key: str, value: Any) -> None:
    attrs = dict(contact.attributes or {})
    attrs[key] = value
    contact.attributes = attrs
    if key in ("phone", "email") and isinstance(value, str) and not getattr(contact, key):
        setattr(contact, key, value[:255])  # like ingest: fill, never overwrite what an agent set
    tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id, change="attribute")


# --- HTTP calls requested by flows ---------------------------------------------------------------


async def perform_http(ctx: AppContext, call: CallHttp, limit: float) -> tuple[int, Any]:
    """Make a flow's HTTP call; status 0 on a network error or timeout."""
    timeout = aiohttp.ClientTimeout(total=max(0.1, min(float(call.timeout), limit)))
    try:
        async with ctx.http_session.request(call.method.upper(), call.url, json=call.json_body,
                                            timeout=timeout) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            return resp.status, body
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.info("bot HTTP call %s %s failed: %s", call.method, call.url.split("?")[0], type(exc).__name__)
        return 0, None


async def _follow_http(ctx: AppContext, rt: BotRuntime, matcher: Any, conversation_id: int,
                       calls: list[CallHttp]) -> None:
    limit = float(rt.config.get("http_timeout_max", 15))
    for _ in range(MAX_HTTP_CHAIN):
        if not calls:
            return
        call = calls[0]  # a state makes one call; the engine ignores answers for states it left
        status, body = await perform_http(ctx, call, limit)

        async def build(_tx: Tx, _conv: Conversation, call: CallHttp = call, status: int = status,
                        body: Any = body) -> BotInput:
            return BotInput(kind="http_result", now=rt.clock(),
                            data={"request_id": call.request_id, "status": status, "json": body})

        calls = await run_round(ctx, rt, matcher, conversation_id, build)


# --- timeouts -------------------------------------------------------------------------------------


async def check_timeouts(ctx: AppContext, now: datetime | None = None) -> int:
    """Feed a timeout input to every bot conversation whose flow timer fell due; returns how many."""
    rt = get_runtime(ctx)
    if not rt.max_timeout or not rt.enabled:
        return 0
    now = now or rt.clock()
    # A timer is armed by the bot's own round, which also bumps last_activity_at: only conversations
    # active within the longest timeout (plus a day of slack for downtime) can hold one.
    since = now - timedelta(seconds=rt.max_timeout + 86400)
    async with ctx.db.session() as s:
        rows = (await s.execute(select(Conversation.id, Conversation.bot_state).where(
            Conversation.handler == "bot", Conversation.status != "resolved",
            Conversation.last_activity_at >= since))).all()
    due: list[tuple[int, str]] = []
    for cid, state in rows:
        timer: Any = (state or {}).get("timeout")
        with contextlib.suppress(KeyError, TypeError, ValueError):
            at = datetime.fromisoformat(timer["due"])
            if (at if at.tzinfo else at.replace(tzinfo=UTC)) <= now:
                due.append((cid, str(timer["token"])))
    if not due:
        return 0
    index = await get_index(ctx, rt.config)
    for cid, token in due:

        async def build(_tx: Tx, conv: Conversation, token: str = token) -> BotInput | None:
            current = (conv.bot_state or {}).get("timeout") or {}
            if current.get("token") != token:
                return None  # the customer answered meanwhile
            return BotInput(kind="timeout", now=now, data={"token": token})

        try:
            calls = await run_round(ctx, rt, index.matcher, cid, build)
            await _follow_http(ctx, rt, index.matcher, cid, calls)
        except Exception:
            log.exception("bot timeout on conversation %s failed", cid)
    return len(due)


async def run_timeouts(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job (scrm.periodic): fire flow timeouts that fell due."""
    interval = float(get_runtime(ctx).config.get("timeout_check_seconds", 5))
    while not stop.is_set():
        try:
            await check_timeouts(ctx)
        except Exception:
            log.exception("bot timeout check failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
