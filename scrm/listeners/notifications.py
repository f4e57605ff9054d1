"""Notifications listener: turns committed events into agent notifications, and pushes every
notification to the tabs of the agent it is for, in whichever process they are connected.

Two subscriptions on the current bus API, kept small so they port to a durable consumer:
- a work listener (once cluster-wide) for assignments, customer replies, SLA warnings and breaches,
  and ended snoozes; it records rows (idempotent by dedup key) in its own transaction;
- an `everywhere` listener for `notification.created` / `notification.read` that writes the frame to
  the sockets of that agent only (mentions are recorded with the note itself, see
  services.notifications.record_mentions).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from scrm import event_interest as interest
from scrm import events as ev
from scrm.db.models import Contact, Conversation, Message
from scrm.listeners.realtime import hub_for
from scrm.services.desk import notifications as svc
from scrm.services.uow import unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.listeners.notifications")
SLA_EVENTS = interest.SLA_EVENTS
PUSHED = (svc.NOTIFICATION_CREATED, "notification.read")


# Cheap test on the event alone: which events can notify anybody (the event log's rule: event_interest.py).
wanted = interest.notifies
NOTIFYING = (ev.CONVERSATION_ASSIGNED, ev.MESSAGE_CREATED, ev.CONVERSATION_STATUS_CHANGED, *SLA_EVENTS)


async def handle(ctx: AppContext, event: ev.Event) -> None:
    """Record the notifications `event` calls for."""
    d = event.data
    cid = d.get("conversation_id")
    if not isinstance(cid, int):
        return
    async with unit_of_work(ctx) as tx:
        row = (await tx.session.execute(select(Conversation, Contact.name).join(Contact, Contact.id == Conversation.contact_id)
                                        .where(Conversation.id == cid))).first()
        if row is None:
            return
        conv, contact = row
        if event.name == ev.CONVERSATION_ASSIGNED:
            agent = int(d["assignee_id"])
            if conv.assignee_id != agent:
                return  # reassigned again before we got here
            await svc.notify(tx, agent, "assigned", dedup_key=f"assigned:{event.id}:{agent}", conversation_id=cid,
                             actor_id=d.get("by"), data={"contact": contact, "preview": conv.last_message_preview,
                                                         "auto": bool(d.get("auto")), "team_id": d.get("team_id")})
        elif event.name == ev.MESSAGE_CREATED:
            if conv.assignee_id is None:
                return
            message = await tx.session.get(Message, d.get("message_id"))
            if message is not None:
                await svc.notify_replied(tx, conv.assignee_id, conv, message, contact)
        elif event.name in SLA_EVENTS:
            if conv.assignee_id is None or conv.status == "resolved":
                return
            kind = "sla_warning" if event.name == "sla.warning" else "sla_breached"
            await svc.notify(tx, conv.assignee_id, kind, dedup_key=f"{kind}:{event.id}:{conv.assignee_id}",
                             conversation_id=cid, data={"contact": contact, "sla_kind": d.get("kind"),
                                                        "due_at": d.get("due_at"), "minutes_left": d.get("minutes_left")})
        elif event.name == ev.CONVERSATION_STATUS_CHANGED and conv.assignee_id is not None:
            await svc.notify(tx, conv.assignee_id, "snooze_ended", dedup_key=f"snooze:{event.id}:{conv.assignee_id}",
                             conversation_id=cid, data={"contact": contact, "preview": conv.last_message_preview})


def push(ctx: AppContext, event: ev.Event) -> None:
    """Write the event to the sockets of the agent it concerns (never to anyone else's)."""
    agent_id = event.data.get("agent_id")
    hub = hub_for(ctx)
    targets = [c for c in list(hub.clients) if c.agent_id == agent_id]
    if not targets:
        return
    frame = json.dumps({"type": "event", "name": event.name, "id": event.id, "at": event.at, "data": event.data},
                       ensure_ascii=False, default=str)
    for client in targets:
        if not client.offer(frame):
            log.warning("notification for agent %s dropped: the tab is too far behind", agent_id)


def install(ctx: AppContext) -> list[Callable[[], None]]:
    """Subscribe the recorder (once per event, cluster-wide) and the per-agent push (every process)."""

    async def on_work(event: ev.Event) -> None:
        await handle(ctx, event)

    async def on_push(event: ev.Event) -> None:
        push(ctx, event)

    hub = hub_for(ctx)
    return [
        *(ctx.bus.subscribe(on_work, name, wants=wanted) for name in NOTIFYING),
        ctx.bus.subscribe(on_push, everywhere=True, wants=lambda e: e.name in PUSHED and bool(hub.clients),
                          interested=lambda name, _cid: name in PUSHED and bool(hub.clients)),
    ]
