"""Visitor connections read what they were nudged about together: one statement for many sockets.

Every push ("message 42 is waiting") makes a connection read its visitor's new rows. On a busy site
those pushes arrive many per second, and a read per socket (a pooled connection, a round trip,
SQLAlchemy's per-statement work) cost the `scrm serve` process more CPU than the chat itself. The
connections nudged while the reads are in flight wait for the next one, which serves them all: each
connection then picks the rows after its own cursor (and the lookback, shown.py). There is no timer:
an idle server reads at once, a busy one reads as often as its database answers.

A connection nudged about a new message (most often the bot's answer) is read before those that only
resync (a reconnect, a resubscription): after a blip every socket of a site reconnects at once, and
their catch-up reads (2,000 sockets: ten batches) used to come first, holding the answers back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from scrm.db.models import utcnow
from scrm.services.webchat import visitors as chat_svc

if TYPE_CHECKING:

    from scrm.services.webchat.shown import Shown

log = logging.getLogger("scrm.webchat")
PAGE = 200  # rows one connection reads at a time on its own
BATCH = 200  # connections one read serves
# Reads in flight at once (each connection in at most one): a connection nudged while one read runs
# goes in the other at once, rather than waiting for the first to come back.
READERS = 2
# One more read may start for urgent connections (a new message) while READERS resyncs are in flight.
URGENT_READERS = 1
ROWS = 5000  # rows one read may return; more (visitors with long backlogs) and they read on their own
KEY = "webchat_catchup"


class Reader(Protocol):
    """A visitor connection as the batch sees it (scrm/web/webchat_ws.py VisitorSocket)."""

    inbox_id: int
    token_key: str
    visitor: str
    identity_id: int | None
    shown: Shown
    conversations: set[int]
    _dirty: bool
    _state_dirty: bool

    @property
    def closed(self) -> bool: ...
    async def show(self, found: list[dict[str, Any]]) -> bool: ...
    async def show_state(self, conv: dict[str, Any] | None) -> None: ...
    async def send_new(self) -> None: ...
    def reading(self) -> None: ...
    def done(self, failed: bool = False) -> None: ...


class CatchUp:
    """This process's batched reads for its visitor connections."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.urgent: dict[Reader, None] = {}  # a new message to show, in arrival order: read first
        self.waiting: dict[Reader, None] = {}  # a resync, in arrival order
        self._running = 0  # counted down the moment a reader finds nothing waiting (not when its task ends)
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, conn: Reader, urgent: bool = False) -> None:
        """`conn` (marked busy by its caller) wants a read; it is told by conn.done()."""
        (self.urgent if urgent else self.waiting)[conn] = None
        if self._running < READERS + (URGENT_READERS if urgent else 0):
            self._start()

    def hurry(self, conn: Reader) -> bool:
        """`conn`, waiting for a resync read, now has a new message to show: read it with the urgent ones.
        False when its read is not waiting (in flight: the connection asks again when told it is done)."""
        if conn not in self.waiting:
            return False
        del self.waiting[conn]
        self.add(conn, urgent=True)
        return True

    def _start(self) -> None:
        self._running += 1
        task = asyncio.get_running_loop().create_task(self._run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[Reader]:
        """The next batch: urgent connections first, then resyncs."""
        batch = list(self.urgent)[:BATCH]
        for conn in batch:
            del self.urgent[conn]
        if len(batch) < BATCH and self._running <= READERS:  # the extra urgent reader takes no resyncs
            more = list(self.waiting)[:BATCH - len(batch)]
            for conn in more:
                del self.waiting[conn]
            batch += more
        return batch

    async def _run(self) -> None:
        try:
            while batch := self._take():
                failed = False
                try:
                    await self._read([c for c in batch if not c.closed])
                except Exception:  # noqa: BLE001 - a database hiccup: read again later (VisitorSocket.done)
                    failed = True
                    log.exception("web chat catch-up failed")
                finally:
                    for conn in batch:
                        conn.done(failed)
        finally:
            self._running -= 1

    async def _read(self, batch: list[Reader]) -> None:
        messages = [c for c in batch if c._dirty]
        states = [c for c in batch if c._state_dirty]
        for conn in batch:  # before reading: a push that arrives meanwhile asks for another read
            conn.reading()
        await self._identities([c for c in batch if c.identity_id is None])
        groups: dict[tuple[int, str], list[Reader]] = {}
        for conn in messages:
            if conn.identity_id is not None:  # none yet: the visitor has written nothing
                groups.setdefault((conn.inbox_id, conn.token_key), []).append(conn)
        for (inbox_id, token_key), conns in groups.items():
            await self._messages(inbox_id, token_key, conns)
        # Also a conversation new to them (show() asks), or none known yet.
        read = set(messages)
        states += [c for c in batch if c._state_dirty or c in read and not c.conversations]
        for conn in batch:
            conn._state_dirty = False
        wanted = {c.identity_id for c in states if c.identity_id is not None}
        if wanted:
            found = await chat_svc.conversation_states(self.ctx, wanted)
            for conn in dict.fromkeys(states):
                if conn.identity_id is not None:
                    await conn.show_state(found.get(conn.identity_id))

    async def _identities(self, conns: list[Reader]) -> None:
        """Visitors who had written nothing when they connected may have by now (their first message)."""
        by_inbox: dict[int, list[Reader]] = {}
        for conn in conns:
            by_inbox.setdefault(conn.inbox_id, []).append(conn)
        for inbox_id, group in by_inbox.items():
            found = await chat_svc.identities_of(self.ctx, inbox_id, {c.visitor for c in group})
            for conn in group:
                conn.identity_id = found.get(conn.visitor)

    async def _messages(self, inbox_id: int, token_key: str, conns: list[Reader]) -> None:
        since = utcnow() - chat_svc.LATE_COMMIT
        afters: dict[int, int] = {}
        for conn in conns:
            assert conn.identity_id is not None
            afters[conn.identity_id] = min(conn.shown.after, afters.get(conn.identity_id, conn.shown.after))
        rows = await chat_svc.messages_of_many(self.ctx, inbox_id, token_key, afters, recent_since=since, limit=ROWS)
        for conn in conns:
            mine = None if rows is None else rows.get(conn.identity_id or 0, [])
            if mine is None or len(mine) > PAGE:  # a long backlog: paged, on its own
                await conn.send_new()
                continue
            after = conn.shown.after
            await conn.show([item for at, item in mine if item["id"] > after or at >= since])


def catchup_for(ctx: Any) -> CatchUp:
    """This process's batched reader."""
    found: CatchUp | None = ctx.extras.get(KEY)
    if found is None:
        found = ctx.extras[KEY] = CatchUp(ctx)
    return found
