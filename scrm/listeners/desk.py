"""Service-desk listener: SLA clocks and report figures, CSAT, automation rules, auto-assignment and
outgoing webhooks, driven by committed events.

Called by the event log's consumer: once per event cluster-wide, in order per conversation, inside the
consumer's transaction (its writes commit with the consumer's progress).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from scrm import event_interest as interest
from scrm import events as ev
from scrm.db.database import batch_fact, shared_for
from scrm.db.models import Message, utcnow
from scrm.db.models_desk import ConversationStats, TeamMember
from scrm.services.conversations.turns import take_turn
from scrm.services.desk import assignment, automation, csat, sla, webhooks_out
from scrm.services.tickets import workflow as ticket_workflow
from scrm.services.uow import unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.listeners.desk")
BOOKKEEPING = {
    ev.CONVERSATION_CREATED, ev.MESSAGE_CREATED, ev.CONVERSATION_STATUS_CHANGED, ev.CONVERSATION_HANDLER_CHANGED,
    ev.CONVERSATION_ASSIGNED, ev.CONVERSATION_UPDATED, ev.TICKET_OPENED, "agent.updated",
}
DESK_WORK = BOOKKEEPING | set(automation.RULE_EVENTS)  # events the desk itself acts on
INTERESTING = DESK_WORK | set(webhooks_out.EVENTS)


# Whether the desk's own bookkeeping (SLA clocks, CSAT) acts on the event (bot replies and notes move no clock):
# the event log's rule, so an event is logged exactly when the desk may act on it.
_desk_relevant = interest.desk_books


class DeskListener:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    async def __call__(self, event: ev.Event) -> None:
        if event.name not in INTERESTING:
            return
        if event.name == ev.CONVERSATION_UPDATED and "priority" not in event.data.get("changed", ("priority",)):
            return  # e.g. a new message moved the clocks: nothing for the desk (only priority changes re-pick the SLA)
        if not await self._wanted(event):
            return
        await self.handle(event)

    async def _wanted(self, event: ev.Event) -> bool:
        """Does any desk step act on the event? Its own bookkeeping (SLA, CSAT, assignment) on the
        events it keeps books of (a bot's or the system's message moves no clock), else only an
        automation rule or an outgoing webhook that listens to it (delivery.updated of a broadcast...)."""
        if event.name in BOOKKEEPING and _desk_relevant(event):
            return True
        if await automation.wants(self.ctx, event.name):
            return True
        return await webhooks_out.wanted(self.ctx, event.name)

    async def handle(self, event: ev.Event) -> None:
        """Each concern in its own transaction: one failing never stops the others."""
        for step in (self._webhooks, self._bookkeeping, self._csat, self._automation, self._assign):
            try:
                await step(event)
            except Exception:
                log.exception("desk step %s failed on %s", step.__name__, event.name)

    async def _webhooks(self, event: ev.Event) -> None:
        if event.name in webhooks_out.EVENTS:
            await webhooks_out.enqueue_event(self.ctx, event)

    async def _automation(self, event: ev.Event) -> None:
        if event.name in automation.RULE_EVENTS:
            await automation.run_rules(self.ctx, event)

    async def _assign(self, event: ev.Event) -> None:
        if event.name == ev.CONVERSATION_HANDLER_CHANGED and event.data.get("handler") == "queue":
            async with unit_of_work(self.ctx) as tx:
                conv = await take_turn(tx, event.data["conversation_id"])
                if conv is not None and conv.handler == "queue":
                    await assignment.auto_assign(tx, conv)
        elif event.name == "agent.updated" and event.data.get("availability") in ("offline", "away"):
            async with unit_of_work(self.ctx) as tx:
                await assignment.reassign_from_offline(tx, int(event.data["agent_id"]))

    async def _csat(self, event: ev.Event) -> None:
        d = event.data
        if (event.name == ev.CONVERSATION_STATUS_CHANGED and d.get("status") == "resolved"
                and d.get("previous") != "resolved" and d.get("by") != "csat"):
            async with unit_of_work(self.ctx) as tx:
                await csat.ask(tx, d["conversation_id"], public_url=self.ctx.settings.server.public_url)

    async def _bookkeeping(self, event: ev.Event) -> None:
        d = event.data
        name = event.name
        if name not in BOOKKEEPING or (name != "agent.updated" and not d.get("conversation_id")) or not _desk_relevant(event):
            return
        if name == "agent.updated":
            return
        async with unit_of_work(self.ctx) as tx:
            conv = await take_turn(tx, d["conversation_id"])
            if conv is None:
                return
            if name == ev.CONVERSATION_UPDATED:
                # Only a priority change re-picks the SLA, and only for a conversation with stats. In a consumer's
                # batch both rows are loaded with it (no statement); alone, one look at the stats row.
                known = await _stats_if_any(tx, conv.id)
                if known is None or known.priority == conv.priority:
                    return
            stats = await sla.ensure_stats(tx, conv)
            now = utcnow()
            if name == ev.CONVERSATION_CREATED and conv.handler != "bot":
                await sla.start_clock(tx, conv, stats, conv.created_at)
            elif name == ev.CONVERSATION_HANDLER_CHANGED:
                handler, previous = d.get("handler"), d.get("previous")
                # The clock first: its policy lookup would flush the counts below as an UPDATE of their own.
                if handler in ("queue", "human"):
                    await sla.start_clock(tx, conv, stats, conv.waiting_since or now)
                if handler in ("queue", "human") and previous == "bot":
                    stats.handoffs += 1
                if handler == "human":
                    stats.human_involved = True
            elif name == ev.CONVERSATION_ASSIGNED:
                await self._attribute(tx, conv, stats, d.get("assignee_id"))
            elif name == ev.CONVERSATION_UPDATED:
                await sla.reprioritize(tx, conv, stats)
            elif name == ev.TICKET_OPENED:
                await sla.start_clock(tx, conv, stats, now)
            elif name == ev.CONVERSATION_STATUS_CHANGED:
                if d.get("status") == "resolved" and stats.resolved_at is None:
                    await sla.on_resolved(tx, stats, conv.resolved_at or now)
                elif d.get("previous") == "resolved" and d.get("status") == "open":
                    await sla.on_reopened(tx, stats, now)
            elif name == ev.MESSAGE_CREATED and d.get("message_id"):
                await self._message(tx, conv, stats, d)

    async def _attribute(self, tx, conv, stats, assignee_id) -> None:  # type: ignore[no-untyped-def]
        stats.agent_id = assignee_id
        if assignee_id is not None and stats.team_id is None:
            # The team this agent answers for on this inbox (reports by team).
            from scrm.db.models_desk import Team

            stats.team_id = await tx.session.scalar(
                select(Team.id).join(TeamMember, TeamMember.team_id == Team.id)
                .where(TeamMember.agent_id == assignee_id, (Team.inbox_id == conv.inbox_id) | Team.inbox_id.is_(None))
                .order_by(Team.inbox_id.is_(None), Team.id).limit(1))

    async def _message(self, tx, conv, stats, d) -> None:  # type: ignore[no-untyped-def]
        msg = await tx.session.get(Message, d["message_id"])
        if msg is None or msg.private:
            return
        if msg.direction == "in" and msg.sender_kind == "contact":
            if await csat.record_reply(tx, msg, conv) is not None:
                return  # a rating, not a new request
            if stats.sla_started_at is None and conv.handler in ("queue", "human"):
                await sla.start_clock(tx, conv, stats, msg.created_at)
            await sla.on_customer_message(tx, stats, msg.created_at)
            waiting = batch_fact(tx.session, "tickets_waiting")  # read for the consumer's whole batch
            if waiting is None or waiting.get(conv.id, True):
                await ticket_workflow.on_customer_message(tx, conv)
        elif msg.direction == "out" and msg.sender_kind == "agent":
            await sla.on_agent_reply(tx, stats, msg.created_at)


async def _stats_if_any(tx, conversation_id: int) -> ConversationStats | None:  # type: ignore[no-untyped-def]
    """The conversation's stats row, if it has one (read like sla.ensure_stats would read it)."""
    shared = shared_for(tx.session)
    if shared is not None and ("desk_conversation_stats", conversation_id) in shared.locked:
        return await tx.session.get(ConversationStats, conversation_id)  # loaded and locked with the batch
    if shared is not None and conversation_id in (shared.facts.get(sla.STATS_MISSING) or ()):
        return None
    return await tx.session.get(ConversationStats, conversation_id, with_for_update=True, populate_existing=True)


def install(ctx: AppContext) -> list[Callable[[], None]]:
    """Subscribe the desk listener and start the outgoing-webhook sender for this process."""
    listener = DeskListener(ctx)
    # One subscription per event it may act on: each is declared in event_interest.CONSUMERS["<name>"]["desk"].
    unsubscribe = [ctx.bus.subscribe(listener, name) for name in sorted(INTERESTING)]
    stop = asyncio.Event()
    ctx.extras.setdefault(webhooks_out.WAKE_KEY, asyncio.Event())
    try:
        sender: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            webhooks_out.run_webhook_sender(ctx, stop))
    except RuntimeError:  # installed outside a loop: retries then wait for the next process start
        sender = None

    def halt() -> asyncio.Task[None] | None:
        # Let the sender finish its current query; the app awaits the returned task on shutdown.
        stop.set()
        return sender

    return [*unsubscribe, halt]  # type: ignore[list-item]
