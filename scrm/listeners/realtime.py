"""Realtime fan-out: every bus event an agent should see goes to this process's WebSockets.

The bus already crosses processes (Redis pub/sub), so each process only serves its own sockets.
Events carry ids; they are enriched here once per process (the message or conversation as the
REST API would answer it) so a thousand open tabs cost one query, not a thousand.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from scrm import events as ev
from scrm.db.models import Agent, Contact, ContactIdentity, Conversation, ConversationLabel, Inbox, Message
from scrm.serializers import conversation_json, message_json
from scrm.services.agents.inbox_members import MEMBERS_CHANGED

if TYPE_CHECKING:
    from aiohttp import web

    from scrm.context import AppContext

log = logging.getLogger("scrm.realtime")

PUSHED = frozenset({
    ev.MESSAGE_CREATED, ev.MESSAGE_UPDATED, ev.CONVERSATION_CREATED, ev.CONVERSATION_UPDATED,
    ev.CONVERSATION_STATUS_CHANGED, ev.CONVERSATION_ASSIGNED, ev.CONVERSATION_HANDLER_CHANGED,
    ev.DELIVERY_UPDATED, ev.CONTACT_UPDATED, ev.TICKET_OPENED, ev.TYPING, "agent.updated",
})
# Events whose payload gets the conversation row (the list updates in place from it).
WITH_CONVERSATION = frozenset({ev.CONVERSATION_CREATED, ev.CONVERSATION_UPDATED})
WITH_MESSAGE = frozenset({ev.MESSAGE_CREATED, ev.MESSAGE_UPDATED})
QUEUE_LIMIT = 500  # a tab this far behind is closed; it reconnects and refetches
HUB_KEY = "realtime_hub"


@dataclass(eq=False)
class Client:
    """One browser tab's socket with its own send queue (a slow tab never slows the others)."""

    ws: web.WebSocketResponse
    agent_id: int
    role: str
    inboxes: frozenset[int] | None = None  # the inboxes this agent sees; None: all (admins)
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))

    def sees(self, inboxes: frozenset[int] | None) -> bool:
        """Whether an event about `inboxes` (None: not about any inbox) may reach this tab."""
        return inboxes is None or self.inboxes is None or not self.inboxes.isdisjoint(inboxes)

    def offer(self, frame: str) -> bool:
        """Queue a frame; False when the tab cannot keep up."""
        try:
            self.queue.put_nowait(frame)
            return True
        except asyncio.QueueFull:
            return False

    async def pump(self) -> None:
        """Write queued frames until the socket closes or None is queued."""
        while True:
            frame = await self.queue.get()
            if frame is None or self.ws.closed:
                return
            try:
                await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return


class Hub:
    """The sockets connected to this process."""

    def __init__(self) -> None:
        self.clients: set[Client] = set()

    def add(self, client: Client) -> None:
        self.clients.add(client)

    def remove(self, client: Client) -> None:
        self.clients.discard(client)

    def broadcast(self, frame: str, inboxes: frozenset[int] | None = None) -> None:
        """Queue `frame` for every tab whose agent sees one of `inboxes` (None: every tab)."""
        for client in list(self.clients):
            if not client.sees(inboxes):
                continue
            if not client.offer(frame):
                log.warning("closing a realtime socket of agent %s: %d frames behind", client.agent_id, QUEUE_LIMIT)
                self.clients.discard(client)
                with contextlib.suppress(asyncio.QueueEmpty):
                    client.queue.get_nowait()
                client.queue.put_nowait(None)
                asyncio.ensure_future(client.ws.close(code=4000, message=b"too slow; reconnect"))


def hub_for(ctx: AppContext) -> Hub:
    """The process's hub (shared by the WebSocket route and the listener through ctx.extras)."""
    hub: Hub | None = ctx.extras.get(HUB_KEY)
    if hub is None:
        hub = ctx.extras[HUB_KEY] = Hub()
    return hub


async def conversation_row(ctx: AppContext, cid: int) -> dict[str, Any] | None:
    """A conversation as the list endpoint shows it."""
    async with ctx.db.session() as s:
        row = (await s.execute(
            select(Conversation, Contact, Inbox, Agent)
            .join(Contact, Contact.id == Conversation.contact_id)
            .join(Inbox, Inbox.id == Conversation.inbox_id)
            .outerjoin(Agent, Agent.id == Conversation.assignee_id)
            .where(Conversation.id == cid)
        )).first()
        if row is None:
            return None
        labels = list((await s.scalars(select(ConversationLabel.label)
                                       .where(ConversationLabel.conversation_id == cid))).all())
    c, contact, inbox, agent = row
    return conversation_json(c, contact=contact, inbox=inbox, assignee=agent, labels=sorted(labels))


async def enrich(ctx: AppContext, event: ev.Event) -> dict[str, Any]:
    """The frame sent to agents for `event`."""
    data = dict(event.data)
    if event.name in WITH_MESSAGE and data.get("message_id"):
        async with ctx.db.session() as s:
            message = await s.get(Message, int(data["message_id"]))
        if message is not None:
            data["message"] = message_json(message)
    elif event.name in WITH_CONVERSATION and data.get("conversation_id"):
        data["conversation"] = await conversation_row(ctx, int(data["conversation_id"]))
    return {"type": "event", "name": event.name, "id": event.id, "at": event.at, "data": data}


_INBOX_OF: collections.OrderedDict[int, int] = collections.OrderedDict()  # conversation -> inbox (never changes)
_INBOX_OF_MAX = 50_000


async def event_inboxes(ctx: AppContext, event: ev.Event) -> frozenset[int] | None:
    """The inboxes an event is about (whose agents may see it), or None for events about no inbox."""
    data = event.data
    cid = data.get("conversation_id")
    if isinstance(cid, int):
        inbox = _INBOX_OF.get(cid)
        if inbox is None:
            async with ctx.db.session() as s:
                inbox = await s.scalar(select(Conversation.inbox_id).where(Conversation.id == cid))
            if inbox is None:
                return frozenset()  # a conversation nobody can see (deleted): tell no agent but admins
            _INBOX_OF[cid] = inbox
            if len(_INBOX_OF) > _INBOX_OF_MAX:
                _INBOX_OF.popitem(last=False)
        return frozenset({inbox})
    if event.name == ev.CONTACT_UPDATED and isinstance(data.get("contact_id"), int):
        async with ctx.db.session() as s:
            ids = frozenset((await s.scalars(select(ContactIdentity.inbox_id)
                                             .where(ContactIdentity.contact_id == data["contact_id"]))).all())
        return ids or None  # a contact on no inbox is everybody's
    if isinstance(data.get("inbox_id"), int):
        return frozenset({data["inbox_id"]})
    return None


async def refresh_visibility(ctx: AppContext, hub: Hub) -> None:
    """Re-read every agent tab's visible inboxes (after an admin changed an inbox's members)."""
    clients = [c for c in list(hub.clients) if c.role != "admin"]
    if not clients:
        return
    from scrm.services.agents.inbox_access import visible_inbox_set

    async with ctx.db.session() as s:
        by_agent = {a: await visible_inbox_set(s, a, "agent") for a in {c.agent_id for c in clients}}
    for client in clients:
        client.inboxes = by_agent[client.agent_id]


def install(ctx: AppContext) -> list[Callable[[], None]]:
    """Subscribe the fan-out to the bus; one worker enriches in arrival order, so frames never go back in time."""
    hub = hub_for(ctx)
    pending: asyncio.Queue[ev.Event] = asyncio.Queue()

    def wanted(event: ev.Event) -> bool:
        if event.name == ev.DELIVERY_UPDATED and not event.data.get("conversation_id"):
            return False  # a broadcast delivery: 100k of them would swamp every agent's tab (the report page polls)
        return (event.name in PUSHED or event.name == MEMBERS_CHANGED) and bool(hub.clients)

    async def on_event(event: ev.Event) -> None:
        pending.put_nowait(event)

    async def worker() -> None:
        while True:
            event = await pending.get()
            if event.name == MEMBERS_CHANGED:
                try:
                    await refresh_visibility(ctx, hub)
                except Exception:  # noqa: BLE001 - the periodic re-read in the socket handler catches up
                    log.exception("could not refresh inbox visibility")
                continue
            try:
                inboxes = await event_inboxes(ctx, event)
            except Exception:  # noqa: BLE001 - unknown inbox: only admins get it (never leak on an error)
                log.exception("could not tell the inbox of %s", event.name)
                inboxes = frozenset()
            try:
                frame = await enrich(ctx, event)
            except Exception:  # noqa: BLE001 - a database hiccup must not stop live updates
                log.exception("could not enrich %s; sending ids only", event.name)
                frame = {"type": "event", "name": event.name, "id": event.id, "at": event.at, "data": event.data}
            hub.broadcast(json.dumps(frame, ensure_ascii=False, default=str), inboxes)

    task = asyncio.get_running_loop().create_task(worker())
    def stop() -> None:
        task.cancel()

    def interested(name: str, _conversation_id: int | None) -> bool:  # other processes' events unparsed without tabs
        return (name in PUSHED or name == MEMBERS_CHANGED) and bool(hub.clients)

    return [ctx.bus.subscribe(on_event, everywhere=True, wants=wanted, interested=interested), stop]
