"""Outbox write batching for the worker: group commit, and its statements built once.

A delivery's state changes are group-committed (see GroupCommit), and the statements that run per
batch are built once per worker with array parameters on PostgreSQL, so their SQL text never
changes with the batch size (no per-call statement building, IN-list rendering or re-preparing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from scrm.db.models import Delivery, Inbox

log = logging.getLogger("scrm.delivery.worker")

ACTIVE = ("queued", "claimed", "sending")
D = Delivery.__table__
T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Coalesce concurrent requests into one database transaction.

    The first urgent request starts a flush at once; requests arriving while it runs wait for the
    next one, so batches grow with load and an idle worker adds no delay. A request that is not
    urgent (nobody waits for it to go on) rides along with the next urgent flush, or is flushed
    `linger` seconds later if none comes: it never makes an urgent one queue behind its own commit.
    A failed flush is retried twice (the statements are guarded by status and owner, so a retry
    never applies anything twice), then every caller in the batch gets the error.
    """

    RETRIES = 2

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R]]], max_batch: int = 500,
                 linger: float = 0.05) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._linger = linger
        self._pending: list[tuple[T, asyncio.Future[R], bool]] = []  # (item, its caller's future, urgent)
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, item: T, *, urgent: bool = True) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future, urgent))
        if self._task is None or self._task.done():
            if urgent:
                self._start()
            elif self._timer is None:
                self._timer = loop.call_later(self._linger, self._start)
        return await future

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        first = True  # started by an urgent request or by the linger's deadline: goes at once
        while self._pending and (first or any(urgent for _, _, urgent in self._pending)):
            first = False
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]
            items = [item for item, _, _ in batch]
            for attempt in range(self.RETRIES + 1):
                try:
                    results = await self._flush(items)
                except Exception as exc:  # noqa: BLE001 - handed to the callers
                    if attempt < self.RETRIES:
                        log.warning("outbox commit of %d rows failed (%s); retrying", len(items), exc)
                        await asyncio.sleep(0.2 * 2**attempt)
                        continue
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for (_, future, _), result in zip(batch, results, strict=True):
                        if not future.done():
                            future.set_result(result)
                break
        if self._pending and self._timer is None:  # only riders left: they go at the deadline
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._start)


class OutboxStatements:
    """The worker's per-delivery statements, built once (their compiled form is then cached).

    PostgreSQL gets the id list as one array parameter: the statement text never changes with the
    batch size, so it is neither re-rendered nor re-prepared per call. SQLite has no arrays and keeps
    an expanding IN list.
    """

    def __init__(self, postgresql: bool) -> None:
        self.postgresql = postgresql
        ids = self.in_list(D.c.id, "ids", BigInteger)
        # Literal alternatives, not IN (...): an IN list would be re-rendered on every execution.
        ours = and_(D.c.claimed_by == bindparam("me"), or_(D.c.status == "claimed", D.c.status == "sending"))
        # The literal (not a parameter) lets a prepared statement's plan use the partial queue indexes.
        queued = D.c.status == literal_column("'queued'")
        due = D.c.next_attempt_at <= bindparam("now")
        # Only the head of each ordering key (no earlier queued, claimed or sending row for the contact):
        # a window of an inbox's oldest rows that counted rows stuck behind another row of their contact
        # (one a dead worker left `sending`) could be all stuck, and the whole inbox waited for that one
        # lease. One probe of ix_deliveries_ordering per row read.
        earlier = D.alias("earlier")
        head = ~exists().where(
            earlier.c.ordering_key == D.c.ordering_key, earlier.c.id < D.c.id,
            or_(*(earlier.c.status == literal_column(f"'{st}'") for st in ACTIVE)))
        # The oldest due rows of given inboxes, so many of each (ix_deliveries_queue_inbox): PostgreSQL
        # takes every inbox in one statement, SQLite one inbox per execution (`inbox`, `n`).
        if postgresql:
            want = (
                func.unnest(bindparam("inboxes", type_=ARRAY(BigInteger)), bindparam("limits", type_=ARRAY(Integer)))
                .table_valued("inbox_id", "n")
                .render_derived(name="want")
            )
            queue = (
                select(D.c.id, D.c.ordering_key, D.c.inbox_id, D.c.kind)
                .where(D.c.inbox_id == want.c.inbox_id, queued, due, head)
                .order_by(D.c.id)
                .limit(want.c.n)
                .with_for_update(skip_locked=True)
                .lateral("queue")
            )
            self.inbox_windows: Any = select(queue.c.id, queue.c.ordering_key, queue.c.inbox_id, queue.c.kind).select_from(
                want.join(queue, true()))
        else:
            self.inbox_windows = (
                select(D.c.id, D.c.ordering_key, D.c.inbox_id, D.c.kind)
                .where(D.c.inbox_id == bindparam("inbox"), queued, due, head)
                .order_by(D.c.id)
                .limit(bindparam("n"))
            )  # SQLite serializes writers: no row locks to take
        self.inbox_ids = select(Inbox.id)
        # Claimed, and the rows at the front of their inbox's line (`arm`) marked `sending` in the same
        # statement: what the line would mark next costs no second commit before its send.
        self.claim = (
            update(D)
            .where(ids, D.c.status == "queued")
            .values(status=case((self.in_list(D.c.id, "arm", BigInteger), literal_column("'sending'")),
                                else_=literal_column("'claimed'")),
                    claimed_by=bindparam("me"), lease_until=bindparam("lease"), attempts=D.c.attempts + 1)
            .returning(*D.c)
        )
        self.mark_sending = (
            update(D)
            .where(ids, D.c.status == "claimed", D.c.claimed_by == bindparam("me"))
            .values(status="sending", lease_until=bindparam("lease"))
            .returning(D.c.id)
        )
        # Whether a due queued row of the same ordering key waits behind the row (one probe of
        # ix_deliveries_ordering): its outcome makes that row the head, to be claimed now; otherwise the
        # claim after it would find nothing (delivery/worker.py, OutboxWorker._start).
        # The updated row's columns spelled out: SQLite renders RETURNING's columns unqualified, which
        # inside the subquery would name the alias's own.
        later = D.alias("later")
        self.waiting = exists().where(
            later.c.ordering_key == literal_column("deliveries.ordering_key"), later.c.id > literal_column("deliveries.id"),
            later.c.status == literal_column("'queued'"),
            later.c.next_attempt_at <= bindparam("now", type_=D.c.next_attempt_at.type)).label("waiting")
        if postgresql:
            # One statement for a whole batch of successful sends, each with its own external id.
            sent = (
                select(func.unnest(bindparam("ids", type_=ARRAY(BigInteger))).label("id"),
                       func.unnest(bindparam("exts", type_=ARRAY(String))).label("ext"))
                .subquery("sent")
            )
            self.mark_sent: Any = (
                update(D)
                .where(D.c.id == sent.c.id, ours)
                .values(status=bindparam("new_status"), sent_at=bindparam("now"), last_error=None,
                        lease_until=None, external_id=sent.c.ext)
                .returning(D.c.id, self.waiting)
            )
            # The same, with their conversation messages in the same statement (one round trip for a batch of
            # sends instead of two, and one UPDATE of the messages instead of one execution per row).
            # `msg_exts`: the external id each message takes (NULL: keeps its own), deduplicated by the caller
            # within the batch; one another message of the inbox has already is not taken (unique per inbox).
            self.mark_sent_with_messages: Any = text(
                "WITH batch AS (SELECT * FROM unnest(CAST(:ids AS BIGINT[]), CAST(:exts AS VARCHAR[]), "
                "CAST(:msg_exts AS VARCHAR[])) AS b(id, ext, msg_ext)), "
                "sent AS (UPDATE deliveries SET status = :new_status, sent_at = :now, last_error = NULL, "
                "lease_until = NULL, external_id = batch.ext FROM batch "
                "WHERE deliveries.id = batch.id AND deliveries.claimed_by = :me "
                "AND (deliveries.status = 'claimed' OR deliveries.status = 'sending') "
                "RETURNING deliveries.id, deliveries.message_id, batch.msg_ext, EXISTS (SELECT 1 FROM deliveries "
                "AS later WHERE later.ordering_key = deliveries.ordering_key AND later.id > deliveries.id "
                "AND later.status = 'queued' AND later.next_attempt_at <= :now) AS waiting), "
                "msg AS (UPDATE messages SET delivery_status = :new_status, delivery_error = NULL, sent_at = :now, "
                "external_id = CASE WHEN sent.msg_ext IS NULL OR EXISTS (SELECT 1 FROM messages AS other "
                "WHERE other.inbox_id = messages.inbox_id AND other.external_id = sent.msg_ext) "
                "THEN messages.external_id ELSE sent.msg_ext END "
                "FROM sent WHERE messages.id = sent.message_id) "
                "SELECT sent.id, sent.waiting FROM sent"
            ).bindparams(
                bindparam("ids", type_=ARRAY(BigInteger)), bindparam("exts", type_=ARRAY(String)),
                bindparam("msg_exts", type_=ARRAY(String)), bindparam("now", type_=D.c.sent_at.type),
                bindparam("new_status", type_=String), bindparam("me", type_=String),
            )
        else:
            self.mark_sent = None  # SQLite: a CASE over the batch's external ids (built per call)
            self.mark_sent_with_messages = None


    def in_list(self, column: Any, name: str, type_: Any) -> ColumnElement[bool]:
        """`column IN :name` for a list parameter: one array on PostgreSQL, an expanding list on SQLite."""
        if self.postgresql:
            return column == any_(bindparam(name, type_=ARRAY(type_)))  # type: ignore[no-any-return]
        return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


# PostgreSQL, straight through asyncpg on the worker's own write connection and outside a transaction (one
# statement commits alone: no BEGIN and COMMIT round trips), for a batch that is nothing but this one change.
# Same statements as OutboxStatements.mark_sending and .mark_sent_with_messages.
MARK_SENDING_ALONE = (
    "UPDATE deliveries SET status = 'sending', lease_until = $3 "
    "WHERE id = ANY($1::bigint[]) AND status = 'claimed' AND claimed_by = $2 RETURNING id"
)
MARK_SENT_ALONE = (
    "WITH batch AS (SELECT * FROM unnest($1::bigint[], $2::varchar[], $3::varchar[]) AS b(id, ext, msg_ext)), "
    "sent AS (UPDATE deliveries SET status = $5, sent_at = $4, last_error = NULL, "
    "lease_until = NULL, external_id = batch.ext FROM batch "
    "WHERE deliveries.id = batch.id AND deliveries.claimed_by = $6 "
    "AND (deliveries.status = 'claimed' OR deliveries.status = 'sending') "
    "RETURNING deliveries.id, deliveries.message_id, batch.msg_ext, EXISTS (SELECT 1 FROM deliveries "
    "AS later WHERE later.ordering_key = deliveries.ordering_key AND later.id > deliveries.id "
    "AND later.status = 'queued' AND later.next_attempt_at <= $4) AS waiting), "
    "msg AS (UPDATE messages SET delivery_status = $5, delivery_error = NULL, sent_at = $4, "
    "external_id = CASE WHEN sent.msg_ext IS NULL OR EXISTS (SELECT 1 FROM messages AS other "
    "WHERE other.inbox_id = messages.inbox_id AND other.external_id = sent.msg_ext) "
    "THEN messages.external_id ELSE sent.msg_ext END "
    "FROM sent WHERE messages.id = sent.message_id) "
    "SELECT sent.id, sent.waiting FROM sent"
)
# The same, and for each sent row whose contact has a due queued row waiting behind it, in an inbox of `$8`
# (unpaced, idempotent, with room: see budget.RESENDABLE_AHEAD), that row taken as the claim would take it
# (not a broadcast's: a paused broadcast holds what is still queued, see ClaimBudget.pick)
# (the contact's head once the sent row is done, not locked by another claim) and marked `sending` for us:
# a new customer's answer behind its greeting, a second question, an agent's reply. One statement instead of
# a claim transaction (BEGIN, window SELECT, UPDATE, COMMIT) after it. Every statement of it sees the rows
# as they were before it (the sent rows still `sending`): they are left out of the head test by their ids.
# One row per sent row: `sent_id`, `sent_waiting`, then the taken row's columns (NULL where none).
MARK_SENT_TAKE_NEXT = (
    "WITH batch AS (SELECT * FROM unnest($1::bigint[], $2::varchar[], $3::varchar[]) AS b(id, ext, msg_ext)), "
    "sent AS (UPDATE deliveries SET status = $5, sent_at = $4, last_error = NULL, "
    "lease_until = NULL, external_id = batch.ext FROM batch "
    "WHERE deliveries.id = batch.id AND deliveries.claimed_by = $6 "
    "AND (deliveries.status = 'claimed' OR deliveries.status = 'sending') "
    "RETURNING deliveries.id, deliveries.message_id, deliveries.ordering_key, deliveries.inbox_id, batch.msg_ext, "
    "EXISTS (SELECT 1 FROM deliveries AS later WHERE later.ordering_key = deliveries.ordering_key "
    "AND later.id > deliveries.id AND later.status = 'queued' AND later.next_attempt_at <= $4) AS waiting), "
    "msg AS (UPDATE messages SET delivery_status = $5, delivery_error = NULL, sent_at = $4, "
    "external_id = CASE WHEN sent.msg_ext IS NULL OR EXISTS (SELECT 1 FROM messages AS other "
    "WHERE other.inbox_id = messages.inbox_id AND other.external_id = sent.msg_ext) "
    "THEN messages.external_id ELSE sent.msg_ext END "
    "FROM sent WHERE messages.id = sent.message_id), "
    "head AS (SELECT (SELECT later.id FROM deliveries AS later WHERE later.ordering_key = sent.ordering_key "
    "AND later.id > sent.id AND later.status = 'queued' AND later.next_attempt_at <= $4 AND later.kind <> 'broadcast' "
    "ORDER BY later.id LIMIT 1 FOR UPDATE SKIP LOCKED) AS id "
    "FROM sent WHERE sent.waiting AND sent.inbox_id = ANY($8::bigint[])), "
    "nxt AS (UPDATE deliveries SET status = 'sending', claimed_by = $6, lease_until = $7, "
    "attempts = deliveries.attempts + 1 FROM head "
    "WHERE deliveries.id = head.id AND deliveries.status = 'queued' "
    "AND NOT EXISTS (SELECT 1 FROM deliveries AS earlier WHERE earlier.ordering_key = deliveries.ordering_key "
    "AND earlier.id < deliveries.id AND (earlier.status = 'queued' OR earlier.status = 'claimed' "
    "OR earlier.status = 'sending') AND earlier.id NOT IN (SELECT sent.id FROM sent)) "
    "RETURNING deliveries.*) "
    "SELECT sent.id AS sent_id, sent.waiting AS sent_waiting, nxt.* FROM sent "
    "LEFT JOIN nxt ON nxt.ordering_key = sent.ordering_key"
)
