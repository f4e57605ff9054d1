"""GET /chat/{inbox}/ws: a visitor's live connection.

The first frame authenticates: {"type": "auth", "token": "...", "after": last message id shown, "shown":
[ids of the newest messages the client has]}
(the H5 page's HttpOnly cookie counts as its token). The server then sends what the visitor missed
and keeps pushing: {"type": "messages", "items": [...]}, {"type": "typing"}, {"type": "conversation",
...} (status, agents' read receipts). The visitor sends {"type": "message", "client_id", "text" |
"choice"}, answered by {"type": "ack", ...} or {"type": "error", ...}, and {"type": "typing"},
{"type": "read", "upto"}, {"type": "ping"}. Close codes: 4401 bad token, 4403 blocked or refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web

from channels import safejson
from channels.web.adapter import WebChatAdapter, visitor_topic
from channels.web.tokens import verify_visitor
from scrm import events as ev
from scrm.db.models import utcnow
from scrm.services.webchat import visitors as chat_svc
from scrm.services.webchat.facts import facts_lookup
from scrm.services.webchat.push import VisitorHub, hub_for
from scrm.services.webchat.shown import MAX_RECENT, Shown
from scrm.web.keys import CTX
from scrm.web.routing import ApiError
from scrm.web.webchat_api import accept_message
from scrm.web.webchat_catchup import PAGE, catchup_for
from scrm.web.webchat_common import (
    check_origin,
    client_ip,
    cookie_name,
    message_id,
    release_socket,
    web_inbox,
)

log = logging.getLogger("scrm.webchat")
AUTH_TIMEOUT = 10.0
TYPING_INTERVAL = 2.0
MAX_SOCKETS_PER_VISITOR = 20
OWN_COPY_DELAY = 1.0  # seconds a visitor's own message waits for a read that would bring it anyway
RETRY_READ = 1.0  # seconds before the messages of a failed read are read again


class VisitorSocket:
    """One visitor connection; it reads from the database what it has not shown when nudged."""

    __slots__ = ("ws", "ctx", "hub", "inbox_id", "token_key", "visitor", "topic", "conversations", "identity_id",
                 "shown", "_dirty", "_state_dirty", "_urgent", "_busy", "blocked", "last_typing", "own",
                 "_announced", "_reading")

    def __init__(self, ws: web.WebSocketResponse, ctx: Any, inbox_id: int, token_key: str, visitor: str,
                 identity_id: int | None, shown: Shown) -> None:
        self.ws = ws
        self.ctx = ctx
        self.hub: VisitorHub = hub_for(ctx)
        self.inbox_id = inbox_id
        self.token_key = token_key
        self.visitor = visitor
        self.topic = visitor_topic(inbox_id, visitor)
        self.conversations: set[int] = set()
        self.identity_id = identity_id
        self.shown = shown
        self._dirty = False
        self._state_dirty = False
        self._urgent = False  # a new message to show: the next read goes before the resyncs
        self._busy = False
        self.blocked = False
        self.last_typing = 0.0  # when this visitor's last typing event went to the agents
        self.own: tuple[int, ...] = ()  # the visitor's latest messages sent over this connection
        # Messages announced since the last read started (the read waiting for its turn brings them), and
        # those announced before the read in flight started (it brings them: every push follows its commit).
        # A message is announced twice (the event bus right after the commit, then the outbox worker's
        # send): the second push while the first one's read is queued or in flight needs no read of its own.
        self._announced: set[int] = set()
        self._reading: set[int] = set()

    @property
    def closed(self) -> bool:
        return self.ws.closed

    def notify(self, push: dict[str, Any]) -> None:
        """A push from the hub (synchronous: it only schedules work)."""
        kind = push.get("t")
        if kind == "m":
            message = push.get("m")
            if isinstance(message, int):
                if (self.shown.has(message) or message in self.own or message in self._announced
                        or message in self._reading):
                    # Already shown (a repeated push after a worker retry), the echo of our own message, or
                    # a second announcement of a message the read queued or in flight brings.
                    return
                self._announced.add(message)
                self._urgent = True  # a new message (the bot's answer): read before the resyncs
            self._dirty = True
        elif kind == "sync":
            self._dirty = self._state_dirty = True
        elif kind == "conversation":
            self._state_dirty = True
        elif kind == "typing":
            self.send({"type": "typing", "name": push.get("name")})
            return
        elif kind == "kick":
            self.blocked = True
            self.send({"type": "error", "code": "blocked", "message": "this chat is not available to you"})
            asyncio.ensure_future(self.ws.close(code=4403, message=b"blocked"))
            return
        self.schedule()

    def resync(self, urgent: bool = False) -> None:
        """Read what the client has not shown, and the conversation's state (a connection that opens);
        `urgent`: a new message is known to be waiting, read with the new messages' reads."""
        self._urgent |= urgent
        self.notify({"t": "sync"})

    def wrote(self, message_id: int, conversation_id: int | None) -> None:
        """The visitor's message sent over this connection is stored (and acknowledged: the widget shows it
        from the ack). Its server copy comes with the next read, most often the bot's answer a few
        milliseconds later, which then serves both (a read per question less); failing that (after a
        handoff no bot reply follows) a read of its own OWN_COPY_DELAY later, whether or not the push to the
        visitor's connections gets through (pub/sub is best effort). Its echo push needs no read."""
        self.own = (*self.own[-7:], message_id)
        if conversation_id is not None and conversation_id not in self.conversations:
            # Watched from now on, so that the bot's answer nudges this connection at once (the event bus);
            # its state (status, who answers) comes with that read.
            self.hub.watch(self, conversation_id)
            self._state_dirty = True
        asyncio.get_running_loop().call_later(OWN_COPY_DELAY, self._own_copy, message_id)

    def _own_copy(self, message_id: int) -> None:
        if not self.ws.closed and not self.shown.has(message_id):
            self.notify({"t": "m", "m": None})

    def schedule(self) -> None:
        """Read what the pushes announced, together with the other connections nudged meanwhile
        (webchat_catchup.py); one read at a time per connection, so reads are applied in order. A new
        message to show is read before the connections that only resync (a reconnect)."""
        if self.ws.closed or not (self._dirty or self._state_dirty):
            return
        if self._busy:
            # Still waiting for a resync read (not in flight): that read comes sooner and shows it.
            if self._urgent and catchup_for(self.ctx).hurry(self):
                self._urgent = False
            return
        self._busy = True
        catchup_for(self.ctx).add(self, self._urgent)
        self._urgent = False

    def reading(self) -> None:
        """A read for this connection starts now: it brings every message announced so far."""
        self._dirty = self._state_dirty = False  # a push that arrives meanwhile asks for another read
        self._reading, self._announced = self._announced, set()

    def done(self, failed: bool = False) -> None:
        """The read in hand is applied: look again if more was pushed meanwhile. After a failed read (a
        database hiccup) the messages it was to bring are read again a little later."""
        self._busy = False
        if failed and self._reading and not self.ws.closed:
            self._announced |= self._reading
            asyncio.get_running_loop().call_later(RETRY_READ, self._retry)
        self._reading = set()
        self.schedule()

    def _retry(self) -> None:
        if self._announced and not self.ws.closed:
            self._dirty = self._urgent = True
            self.schedule()

    def send(self, frame: dict[str, Any]) -> None:
        if not self.ws.closed:
            asyncio.ensure_future(self._write(json.dumps(frame, ensure_ascii=False)))

    async def _write(self, text: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(text)

    async def send_new(self) -> None:
        """Read on its own what was not shown, page by page, and show it (a long backlog)."""
        assert self.identity_id is not None
        while True:
            found = await chat_svc.messages(self.ctx, self.inbox_id, self.token_key, self.identity_id,
                                            after=self.shown.after, limit=PAGE,
                                            recent_since=utcnow() - chat_svc.LATE_COMMIT)
            if not await self.show(found) or len(found) < PAGE:
                return

    async def show(self, found: list[dict[str, Any]]) -> bool:
        """Show the rows of a read (after the cursor, with the lookback) not shown yet; False: none.
        A message of a conversation new to this connection asks for the conversation's state too."""
        items = self.shown.take(found)  # a late commit below the cursor too
        if not items:
            return False
        for item in items:
            if item["conversation_id"] not in self.conversations:
                self.hub.watch(self, item["conversation_id"])
                self._state_dirty = True
        await self._write(json.dumps({"type": "messages", "items": items}, ensure_ascii=False))
        return True

    async def show_state(self, conv: dict[str, Any] | None) -> None:
        """Show the visitor's latest conversation (status, read receipts)."""
        if conv is not None:
            self.hub.watch(self, conv["id"])
            await self._write(json.dumps({"type": "conversation", "conversation": conv}))


async def websocket(request: web.Request) -> web.StreamResponse:
    """Upgrade a visitor's request; refused (403) before the upgrade for a site that may not chat here."""
    ctx = request.app[CTX]
    inbox, adapter = await web_inbox(request)
    check_origin(request, adapter)
    st: Any = adapter.settings
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=st.max_message_chars * 4 + 4096)
    await ws.prepare(request)
    try:
        try:
            first = await ws.receive(timeout=AUTH_TIMEOUT)
            frame = safejson.loads(first.data) if first.type == WSMsgType.TEXT else {}
        except (TimeoutError, ValueError, TypeError):  # safejson.UnsafeJSON is a ValueError
            frame = {}
        if not isinstance(frame, dict) or frame.get("type") != "auth":
            await ws.close(code=4401, message=b"send an auth frame first")
            return ws
        token = frame.get("token") if isinstance(frame.get("token"), str) else request.cookies.get(cookie_name(inbox.id))
        visitor = verify_visitor(adapter.secrets.token_key, inbox.id, token)  # type: ignore[attr-defined]
        if visitor is None:
            await ws.close(code=4401, message=b"bad visitor token")
            return ws
        identity = await facts_lookup(ctx).get(inbox.id, visitor)
        hub = hub_for(ctx)
        blocked = identity is not None and identity[1]
        if blocked or len(hub.by_topic.get(visitor_topic(inbox.id, visitor), ())) >= MAX_SOCKETS_PER_VISITOR:
            await ws.close(code=4403, message=b"refused")
            return ws
        conn = VisitorSocket(ws, ctx, inbox.id, adapter.secrets.token_key, visitor,  # type: ignore[attr-defined]
                             identity[0] if identity else None, _shown(frame))
        hub.add(conn)
        try:
            await ws.send_str(json.dumps({"type": "hello"}))
            # A reply pushed while the visitor was away (a reconnect): this first read goes with the new
            # messages, ahead of the resyncs of every other socket that reconnects at the same moment.
            conn.resync(urgent=hub.take_missed(conn.topic))
            await _serve(request, conn, inbox, adapter)
        finally:
            hub.remove(conn)
        return ws
    finally:
        release_socket(request, ws)


def _shown(frame: dict[str, Any]) -> Shown:
    """What the client has, from its auth frame: `after` (the newest id it has) and `shown` (the ids of its
    newest messages). Without the list (an older widget), all it had up to `after` counts as shown."""
    after = message_id(frame.get("after")) or 0
    ids = frame.get("shown")
    if isinstance(ids, list) and len(ids) <= MAX_RECENT and all(message_id(i) for i in ids):
        return Shown(after, ids)
    return Shown(after)


async def _serve(request: web.Request, conn: VisitorSocket, inbox: Any, adapter: WebChatAdapter) -> None:
    ctx = request.app[CTX]
    ip = client_ip(request)
    async for msg in conn.ws:
        if msg.type != WSMsgType.TEXT:
            continue
        try:
            frame: Any = safejson.loads(msg.data)
            kind = frame.get("type")
        except (ValueError, AttributeError):
            continue  # junk from a client is ignored, not fatal
        try:
            await _frame(ctx, conn, inbox, adapter, frame, kind, ip)
        except Exception:  # noqa: BLE001 - one frame's failure (a database hiccup) must not end the visitor's chat
            log.exception("web chat frame %r failed", kind if isinstance(kind, str) else type(kind).__name__)
            conn.send({"type": "error", "code": "internal", "message": "that did not work; try again"})


async def _frame(ctx: Any, conn: VisitorSocket, inbox: Any, adapter: WebChatAdapter, frame: dict[str, Any],
                 kind: Any, ip: str) -> None:
    """Act on one frame from the visitor."""
    if kind == "ping":
        conn.send({"type": "pong"})
    elif kind == "message":
        try:
            result = await accept_message(ctx, inbox, adapter, conn.visitor, frame, ip, blocked_checked=True)
            conn.send({"type": "ack", **result})
        except ApiError as exc:
            conn.send({"type": "error", "client_id": frame.get("client_id"), "code": exc.code,
                       "message": exc.message, "status": exc.status})
            return
        if isinstance(result["id"], int):
            conn.wrote(result["id"], message_id(result["conversation_id"]))
    elif kind == "read" and message_id(frame.get("upto")) and conn.identity_id is not None:
        await chat_svc.mark_read(ctx, inbox.id, conn.identity_id, frame["upto"])
    elif kind == "typing" and conn.conversations and time.monotonic() - conn.last_typing >= TYPING_INTERVAL:
        conn.last_typing = time.monotonic()
        await ctx.bus.publish([ev.Event(ev.TYPING, {
            "conversation_id": max(conn.conversations), "agent_id": None, "contact": True,
            "agent_name": await _visitor_name(ctx, conn), "private": False})])
    elif kind == "sync":
        conn.notify({"t": "sync"})


async def _visitor_name(ctx: Any, conn: VisitorSocket) -> str:
    name = await chat_svc.visitor_name(ctx, conn.identity_id) if conn.identity_id is not None else None
    return name or "访客 Visitor"


def add_routes(app: web.Application) -> None:
    """Register GET /chat/{inbox}/ws."""
    app.router.add_get("/chat/{inbox:\\d+}/ws", websocket)
