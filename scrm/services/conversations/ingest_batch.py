"""Group commit for ingest: messages that arrive for one inbox while a transaction is running share the next one.

Under load most of the cost of storing a message is round trips and per-transaction work (begin,
dedup lookup, identity lock, conversation lookup, insert, three updates, commit). Here the lookups
are set-based: one dedup query, one locking identity query (sorted, so two processes lock in the same
order), one contact query and one latest-conversation query for the whole batch, then a single flush,
the clocks in one statement, one INSERT ... RETURNING for the messages (ingest_writes.py) and one commit.
Nothing waits for a batch to fill: a lone message is a batch of one, so latency at low load is unchanged;
only while requests come fast does a short batch wait a moment for more (LINGER).

Each caller still gets its own acknowledgement only after the commit that stored its messages.
The paths, fastest first: on PostgreSQL the database function (ingest_pg.py, one round trip), then
this set-based batch (both tried twice: a concurrent process created the same identity, a deadlock),
then every request on its own (ingest_one.ingest_each, retried up to four times) so one bad message
cannot fail its neighbours. Each step down is a WARNING with its reason and counted in /metrics
(scrm_ingest_fallbacks_total). The rules themselves are ingest_rules.py's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from scrm import events as ev
from scrm.db.models import Contact, ContactIdentity, Conversation, Inbox, Message, utcnow
from scrm.db.sql import by_each_key, is_postgresql, one_of
from scrm.domain import InboundMessage, IngestOutcome
from scrm.event_log import append, listening
from scrm.metrics import INGEST_FALLBACKS, INGEST_LATENCY, INGESTED
from scrm.services.conversations import ingest_rules as rules
from scrm.services.conversations.ingest_identity import update_profile
from scrm.services.conversations.ingest_one import emit_stored, ingest_each, open_or_reopen, store_message
from scrm.services.conversations.ingest_pg import store_fast
from scrm.services.conversations.ingest_writes import BatchClocks, insert_messages
from scrm.services.uow import Tx

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.ingest")

_T = TypeVar("_T")
MAX_BATCH_MESSAGES = 128  # bounds one transaction's lock set and statement size
_BATCH_ATTEMPTS = 2
# Linger: while an inbox's requests come faster than LINGER_FROM per second (counted over RATE_WINDOW), a
# drain task about to start a batch of fewer than LINGER_FILL requests waits for more to join it: LINGER at
# most, less once LINGER_FILL are waiting (at 640 requests/s and more the batch is full before LINGER is up).
# Each transaction costs the same call, commit and WAL flush whether it stores one message or thirty; the
# worker's claims, woken by each commit, then find more events at once too. Measured (bench/bot_reply.py
# --rate, one worker, CPU ms per message of the worker + the database's PostgreSQL backends + `scrm serve`):
# - no linger -> 15 ms / 8 requests, at 200 msg/s: serve 1.46 / 1.54 -> 1.24 / 1.31, PostgreSQL 3.35 / 3.42
#   -> 2.60 / 2.66, the worker +0.2;
# - 15 ms / 8 -> 30 ms / 16 -> 50 ms / 32 requests, at 300 msg/s, two rounds: 4.20 / 4.15 -> 3.82 / 3.66 ->
#   3.55 / 3.26 in all (serve 0.68 -> 0.53, PostgreSQL 1.76 -> 1.30, worker 1.75 -> 1.58), bot reply p50 93
#   -> 111 ms; at such rates the CPU a followed-up message costs is what bounds the rate the bot keeps up with.
# Closed-loop acknowledgements (bench/ingest.py) unchanged: their queue is rarely short, and a full one never
# waits. An acknowledgement waits at most LINGER more (a platform allows seconds); a lone message not at all.
LINGER_FROM = 100.0
LINGER = 0.05
LINGER_FILL = 32
RATE_WINDOW = 0.5


@dataclass
class _Pending:
    inbox: Inbox
    messages: list[InboundMessage]
    future: asyncio.Future[list[IngestOutcome]]
    submitted: float = field(default_factory=time.perf_counter)


class GroupCommit:
    """One queue per inbox, drained by up to `in_flight` transactions at once per inbox and process.

    Two on PostgreSQL: while one batch waits on the database the next one is built, so the process
    is not idle between round trips. One on SQLite, which has a single writer anyway.
    """

    def __init__(self, ctx: AppContext, max_messages: int = MAX_BATCH_MESSAGES, in_flight: int | None = None) -> None:
        self.ctx = ctx
        self.max_messages = max_messages
        self.in_flight = in_flight or (1 if ctx.db.is_sqlite else 2)
        self._queues: dict[int, list[_Pending]] = {}
        self._draining: dict[int, int] = {}  # inbox id -> drain tasks running
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrivals: dict[int, collections.deque[float]] = {}  # inbox id -> when its recent requests came
        self._published: dict[int, asyncio.Event] = {}  # inbox id -> set when the latest batch has published
        self._lingering: dict[int, asyncio.Event] = {}  # inbox id -> set once LINGER_FILL requests wait (_linger)
        # scrm_ingest_batch (ingest_pg.py); SCRM_INGEST_DB_FUNCTION=off turns it off (bench/ingest.py --no-db-function)
        self.fast = not ctx.db.is_sqlite and os.environ.get("SCRM_INGEST_DB_FUNCTION", "on") != "off"

    async def submit(self, inbox: Inbox, messages: list[InboundMessage]) -> list[IngestOutcome]:
        future: asyncio.Future[list[IngestOutcome]] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(inbox.id, []).append(_Pending(inbox, messages, future))
        self._arrived(inbox.id)
        filled = self._lingering.get(inbox.id)
        if filled is not None and len(self._queues[inbox.id]) >= LINGER_FILL:
            filled.set()  # a lingering drain task starts the batch now (_linger)
        if self._draining.get(inbox.id, 0) < self.in_flight:
            self._draining[inbox.id] = self._draining.get(inbox.id, 0) + 1
            task = asyncio.create_task(self._drain(inbox.id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def _arrived(self, inbox_id: int) -> None:
        """Count a request of this inbox (the arrival rate over the last RATE_WINDOW)."""
        now = time.perf_counter()
        seen = self._arrivals.setdefault(inbox_id, collections.deque())
        seen.append(now)
        while seen[0] < now - RATE_WINDOW:
            seen.popleft()

    def _busy(self, inbox_id: int) -> bool:
        """Whether this inbox's requests came at LINGER_FROM per second or faster lately (see LINGER)."""
        seen, enough = self._arrivals.get(inbox_id, ()), int(LINGER_FROM * RATE_WINDOW)
        return len(seen) >= enough and seen[-enough] >= time.perf_counter() - RATE_WINDOW

    async def _linger(self, inbox_id: int) -> None:
        """Wait LINGER for more requests to join, or until LINGER_FILL are waiting (at high rates sooner)."""
        filled = self._lingering.setdefault(inbox_id, asyncio.Event())
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LINGER):
                    await filled.wait()
        finally:
            if self._lingering.get(inbox_id) is filled:
                del self._lingering[inbox_id]

    async def _drain(self, inbox_id: int) -> None:
        try:
            while self._queues.get(inbox_id):
                if len(self._queues[inbox_id]) < LINGER_FILL and self._busy(inbox_id):
                    await self._linger(inbox_id)
                queue = self._queues.get(inbox_id)
                if not queue:
                    break
                batch: list[_Pending] = []
                count = 0
                while queue and (not batch or count + len(queue[0].messages) <= self.max_messages):
                    pending = queue.pop(0)
                    batch.append(pending)
                    count += len(pending.messages)
                if not queue:
                    del self._queues[inbox_id]
                try:
                    await self._commit(batch)
                except Exception as exc:  # noqa: BLE001 - never leave a request waiting forever
                    log.exception("ingest batch of %d requests failed", len(batch))
                    for pending in batch:
                        _settle(pending, exc)
        finally:
            self._draining[inbox_id] -= 1
            if not self._draining[inbox_id]:
                del self._draining[inbox_id]

    async def _commit(self, batch: list[_Pending]) -> None:
        # Batches of one inbox publish their events in the order they started, even when the
        # second commits first: listeners (bot, desk) see a conversation's messages in order.
        previous = self._published.get(batch[-1].inbox.id)
        published = self._published[batch[-1].inbox.id] = asyncio.Event()
        try:
            await self._commit_in_order(batch, previous)
        finally:
            published.set()
            if self._published.get(batch[-1].inbox.id) is published:
                del self._published[batch[-1].inbox.id]

    async def _commit_in_order(self, batch: list[_Pending], previous: asyncio.Event | None) -> None:
        inbox = batch[-1].inbox
        messages = [m for p in batch for m in p.messages]
        outcomes: dict[int, IngestOutcome] = {}  # by index in `messages`
        events: list[ev.Event] = []
        rest = list(range(len(messages)))  # not stored yet
        failure: BaseException | None = None
        snapshot = await listening(self.ctx)  # which events a consumer may act on (cached reads, before any transaction)
        if self.fast:  # PostgreSQL: what scrm_ingest_batch handles, in one round trip
            fast, failure = await self._attempts(lambda: store_fast(self.ctx.db, self.ctx.adapters, inbox, messages, snapshot), len(messages))
            if fast is not None:
                outcomes, events, rest = fast.outcomes, fast.events, fast.rest
            else:
                assert failure is not None
                if _missing_function(failure):
                    self.fast = False
                fell_back("function", "batch", failure, len(messages),
                          "the database lacks scrm_ingest_batch (run `scrm migrate`)" if not self.fast else "")
        if rest:
            async def python_path() -> tuple[list[IngestOutcome], list[ev.Event]]:
                async with self.ctx.db.transaction() as session:
                    tx = Tx(session, self.ctx.adapters)
                    stored = await store_batch(tx, inbox, [messages[i] for i in rest])
                    await append(session, tx.events, snapshot)  # the follow-up work commits with the messages
                return stored, tx.events

            done, failure = await self._attempts(python_path, len(rest))
            if done is not None:
                outcomes.update(zip(rest, done[0], strict=True))
                events += done[1]
                rest = []
        done_at = time.perf_counter()
        latency = INGEST_LATENCY.labels(channel=inbox.channel_type)  # metric children once a batch, not per message
        counted = {"message": 0, "duplicate": 0}
        unsettled: list[tuple[_Pending, range]] = []
        start = 0
        # Requests whose messages are all committed are answered now, before the events go out: the events
        # are in the log with them (a consumer finds them at its next poll even if no wake-up ever comes), and
        # the answer need not wait for the previous batch's publish or a Redis round trip.
        for pending in batch:
            indexes = range(start, start + len(pending.messages))
            start += len(pending.messages)
            if any(i not in outcomes for i in indexes):
                unsettled.append((pending, indexes))
                continue
            self._answer(pending, [outcomes[i] for i in indexes], counted, latency, done_at)
        if previous is not None:
            await previous.wait()
        if events:
            await self.ctx.bus.publish(events)
        if unsettled and failure is not None:
            if len(batch) == 1 and not _retryable(failure):
                _settle(batch[0], failure)  # e.g. the database is down: the request gets its 503
                return
            fell_back("batch", "single", failure, len(rest))
        for pending, indexes in unsettled:
            # The batch failed: this request's messages on their own, with the single path's retries.
            missing = [i for i in indexes if i not in outcomes]
            try:
                stored = await ingest_each(self.ctx, pending.inbox, [messages[i] for i in missing])
            except Exception as exc:  # noqa: BLE001
                _settle(pending, exc)
                continue
            outcomes.update(zip(missing, stored, strict=True))
            self._answer(pending, [outcomes[i] for i in indexes], counted, latency, time.perf_counter())
        for result, n in counted.items():
            if n:
                INGESTED.labels(channel=inbox.channel_type, result=result).inc(n)

    @staticmethod
    def _answer(pending: _Pending, mine: list[IngestOutcome], counted: dict[str, int], latency: Any,
                done_at: float) -> None:
        for outcome in mine:
            counted["duplicate" if outcome.duplicate else "message"] += 1
        latency.observe(done_at - pending.submitted)
        _settle(pending, mine)

    async def _attempts(self, store: Callable[[], Awaitable[_T]], count: int) -> tuple[_T | None, BaseException | None]:
        """Run `store` (one transaction) up to twice: a concurrent duplicate or a deadlock is worth a retry."""
        error: BaseException | None = None
        for attempt in range(_BATCH_ATTEMPTS):
            try:
                return await store(), None
            except (IntegrityError, DBAPIError) as exc:
                error = exc
                if not _retryable(exc):
                    break
                if attempt + 1 < _BATCH_ATTEMPTS:
                    log.info("ingest batch of %d (attempt %d) failed, trying again: %s", count, attempt + 1,
                             rules.failure_reason(exc))
            except Exception as exc:  # noqa: BLE001 - handed to the slower path, then to the waiting request(s)
                return None, exc
        return None, error

    async def close(self) -> None:
        """Let batches already queued finish (graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, IntegrityError) or rules.is_retryable(exc)


def fell_back(source: str, target: str, failure: BaseException, count: int, hint: str = "") -> None:
    """A faster path failed and a slower one takes its messages: said at WARNING, and counted in /metrics."""
    reason = rules.failure_reason(failure)
    log.warning("ingest: %d messages fall back from the %s path to the %s path after %s: %s%s", count, source, target,
                reason, str(failure).splitlines()[0] if str(failure) else "", f"; {hint}" if hint else "")
    INGEST_FALLBACKS.labels(source, target, reason).inc()


def _missing_function(exc: BaseException | None) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "42883"  # undefined_function


def _settle(pending: _Pending, result: list[IngestOutcome] | BaseException) -> None:
    if pending.future.done():  # the request was cancelled; its messages are stored anyway (the retry is a duplicate)
        return
    if isinstance(result, BaseException):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)


async def store_batch(tx: Tx, inbox: Inbox, messages: list[InboundMessage]) -> list[IngestOutcome]:
    """Store messages of one inbox in `tx`, in order, each exactly once. Returns one outcome per message."""
    session = tx.session
    pg = is_postgresql(session)
    threaded = rules.is_threaded(tx.channels, inbox)
    stored: dict[str, IngestOutcome] = {
        r.external_id: IngestOutcome(duplicate=True, message_id=r.id, conversation_id=r.conversation_id)
        for r in await session.execute(by_each_key(
            select(Message.id, Message.conversation_id, Message.external_id).where(Message.inbox_id == inbox.id),
            Message.external_id, {m.external_id for m in messages}, postgresql=pg,
        ))
    }
    fast = [m for m in messages if m.external_id not in stored and rules.follows_latest(m, threaded)]
    identities, contacts, latest = await _load_senders(tx, inbox, rules.lock_order(m.sender_id for m in fast))
    opened = await _open_conversations(tx, inbox, fast, identities, contacts, latest)
    replied: dict[str, int] = {}
    if reply_refs := {m.reply_to_external_id for m in messages if m.reply_to_external_id}:
        replied = {
            r.external_id: r.id
            for r in await session.execute(by_each_key(
                select(Message.id, Message.external_id).where(Message.inbox_id == inbox.id),
                Message.external_id, reply_refs, postgresql=pg,
            ))
        }

    outcomes: list[IngestOutcome | None] = []
    # Not yet inserted: (index in outcomes, message, its row's values, conversation, contact, created, reopened).
    unflushed: list[tuple[int, InboundMessage, dict[str, Any], Conversation, Contact, bool, bool]] = []
    in_batch: dict[str, int] = {}  # external id -> index of the outcome that stored it
    copies: dict[int, int] = {}  # index of a repeated message -> index of its first copy
    slow_senders: set[str] = set()
    clocks = BatchClocks()

    async def flush_and_emit() -> None:
        if not unflushed:
            return
        await session.flush()  # what the ORM tracks: new names, reopened conversations
        await clocks.write(session, postgresql=pg)
        # The messages themselves: one INSERT ... RETURNING for all (no ORM objects to track).
        ids = await insert_messages(session, [values for _, _, values, *_ in unflushed], postgresql=pg)
        for (index, msg, _, conv, contact, created, reopened), message_id in zip(unflushed, ids, strict=True):
            outcomes[index] = emit_stored(tx, inbox, msg, message_id, conv, contact, created=created, reopened=reopened)
        unflushed.clear()

    for msg in messages:
        if msg.external_id in stored:
            outcomes.append(stored[msg.external_id])
            continue
        if msg.external_id in in_batch:  # the same message twice in one batch (a platform retry raced us)
            copies[len(outcomes)] = in_batch[msg.external_id]
            outcomes.append(None)
            continue
        identity = identities.get(msg.sender_id)
        contact = contacts.get(identity.contact_id) if identity is not None else None
        if identity is None or contact is None or msg.sender_id in slow_senders or not rules.follows_latest(msg, threaded):
            # Merged contact, email threading: the single path, flushing first so events keep their order.
            await flush_and_emit()
            outcome = await store_message(tx, inbox, msg)
            slow_senders.add(msg.sender_id)
            in_batch[msg.external_id] = len(outcomes)
            outcomes.append(outcome)
            continue
        now = utcnow()
        if msg.profile is not None:
            update_profile(tx, contact, identity, msg.profile)
        conversation, _, reopened = await open_or_reopen(
            tx, inbox, identity, contact, msg, now, rules.continuable(inbox, latest.get(identity.id))
        )
        latest[identity.id] = conversation  # the sender's next message in this batch joins it
        created = conversation.id in opened
        opened.discard(conversation.id)
        reply_to_id = replied.get(msg.reply_to_external_id) if msg.reply_to_external_id else None
        values = rules.message_values(inbox, msg, conversation, reply_to_id, now)
        clocks.move(msg, identity, contact, conversation, now)
        in_batch[msg.external_id] = len(outcomes)
        unflushed.append((len(outcomes), msg, values, conversation, contact, created, reopened))
        outcomes.append(None)
    await flush_and_emit()

    for index, first in copies.items():
        original = outcomes[first]
        assert original is not None
        outcomes[index] = rules.duplicate_of(original)
    result = [o for o in outcomes if o is not None]
    assert len(result) == len(messages)
    return result


async def _load_senders(
    tx: Tx, inbox: Inbox, senders: list[str]
) -> tuple[dict[str, ContactIdentity], dict[int, Contact], dict[int, Conversation | None]]:
    """Lock the senders' identities (creating new ones), load their contacts and latest conversations."""
    session = tx.session
    pg = is_postgresql(session)
    identities: dict[str, ContactIdentity] = {}
    contacts: dict[int, Contact] = {}
    latest: dict[int, Conversation | None] = {}
    if not senders:
        return identities, contacts, latest
    # Locked in the order of `senders` (ingest_rules.lock_order): concurrent batches, in other processes too, lock
    # shared identities in the same order.
    for identity in await session.scalars(by_each_key(
        select(ContactIdentity).where(ContactIdentity.inbox_id == inbox.id).with_for_update(key_share=True),
        ContactIdentity.external_id, senders, postgresql=pg, entity=ContactIdentity,
    )):
        identities[identity.external_id] = identity
    if identities:
        # Contacts and conversations are read only once the locks are held, in statements of their own:
        # one joined to the locking query would return the rows as they were before a concurrent batch
        # of the same senders committed (the stale contact's attributes would overwrite that batch's).
        contact_ids = {i.contact_id for i in identities.values()}
        for contact in await session.scalars(select(Contact).where(one_of(Contact.id, contact_ids, postgresql=pg))):
            if contact.merged_into_id is None:  # a merged contact takes the single path, which follows the merge
                contacts[contact.id] = contact
        ids = [i.id for i in identities.values()]
        rank = func.row_number().over(
            partition_by=Conversation.identity_id,
            order_by=(Conversation.last_activity_at.desc(), Conversation.id.desc()),
        )
        ranked = select(Conversation.id.label("id"), rank.label("rank")).where(one_of(Conversation.identity_id, ids, postgresql=pg)).subquery()
        latest = dict.fromkeys(ids)
        for conv in await session.scalars(select(Conversation).join(ranked, ranked.c.id == Conversation.id).where(ranked.c.rank == 1)):
            latest[conv.identity_id] = conv
    missing = [s for s in senders if s not in identities]
    if missing:
        # New people: contacts and identities in two multi-row inserts. A concurrent process creating
        # the same identity makes the flush fail; the batch is then run again and finds it.
        now = utcnow()
        fresh = [rules.new_contact(now) for _ in missing]
        session.add_all(fresh)
        await session.flush()
        created = [ContactIdentity(inbox_id=inbox.id, external_id=s, contact_id=c.id, attributes={}) for s, c in zip(missing, fresh, strict=True)]
        session.add_all(created)
        await session.flush()
        for identity, contact in zip(created, fresh, strict=True):
            identities[identity.external_id] = identity
            contacts[contact.id] = contact
            latest[identity.id] = None
            tx.emit(ev.CONTACT_UPDATED, contact_id=contact.id, created=True)
    return identities, contacts, latest


async def _open_conversations(
    tx: Tx, inbox: Inbox, messages: list[InboundMessage], identities: dict[str, ContactIdentity],
    contacts: dict[int, Contact], latest: dict[int, Conversation | None],
) -> set[int]:
    """Open, in one insert, the conversations the batch needs (a sender's first message with nothing to continue)."""
    now = utcnow()
    opened: list[Conversation] = []
    first_seen: set[str] = set()
    for msg in messages:
        identity = identities.get(msg.sender_id)
        if msg.sender_id in first_seen or identity is None or identity.contact_id not in contacts:
            continue
        first_seen.add(msg.sender_id)
        if rules.continuable(inbox, latest.get(identity.id)) is None:
            conv = rules.new_conversation(inbox, identity, contacts[identity.contact_id], msg, now)
            opened.append(conv)
    if opened:
        tx.session.add_all(opened)
        await tx.session.flush()
        for conv in opened:
            latest[conv.identity_id] = conv
    return {c.id for c in opened}
