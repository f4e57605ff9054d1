"""A consumer batch's new deliveries handed straight to this process's outbox worker.

The bot's answer is a delivery row written by the event log consumer's batch. Left to the claim loop it
waits for two more transactions before its send: the claim (look up the queue, mark it claimed) and the
mark `sending`, each a commit, each queued behind the worker's other work (25-100 ms of the customer's
wait, measured with bench/bot_reply.py). When the process runs an outbox worker, the batch marks its
new deliveries `sending` for that worker in its own transaction, and the worker starts them once the
batch has committed: the row is still committed as `sending`, by its worker, before the channel is
called, so a kill -9 at any point leaves it as the claim path would (recovered when that worker is
found dead: resent with the same idempotency key, or "outcome unknown" where the channel has none).

A batch's plain rows (BatchRows) still waiting for its one INSERT go in `sending` for the worker already:
one indexed read of their contacts' earlier rows before the INSERT, where marking them after it wrote a
second version of each row, with its seven index entries (the larger part of the hand-over's cost in
PostgreSQL, bench/bot_reply.py). Rows the batch inserted earlier, and ORM rows, are marked after it.

Only what the claim path would take at once is handed: due rows (not held for a passive reply) that are
the head of their ordering key (no earlier queued, claimed or sending row for the contact, the claim's own
test; a greeting and an answer to one contact written together: the answer waits its turn in the queue),
within the worker's budget for the inbox and the places its line marks `sending` ahead (pacing.Pacer), so
a rate-limited line never holds more `sending` rows than it would have marked itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    String,
    Table,
    and_,
    any_,
    bindparam,
    exists,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from scrm import events as ev
from scrm.db.models import Delivery, utcnow
from scrm.delivery.batching import ACTIVE
from scrm.services.outbox import BatchDelivery

if TYPE_CHECKING:
    from scrm.db.database import SharedTransaction

D: Table = Delivery.__table__
_EARLIER = D.alias("earlier")
# PostgreSQL only: consumer batches defer their deliveries (and so hand them over) there alone.
HAND_OVER = (
    update(D)
    .where(
        D.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger))),
        D.c.status == literal_column("'queued'"),
        ~exists().where(and_(
            _EARLIER.c.ordering_key == D.c.ordering_key, _EARLIER.c.id < D.c.id,
            or_(*(_EARLIER.c.status == literal_column(f"'{st}'") for st in ACTIVE)))),
    )
    .values(status="sending", claimed_by=bindparam("me"), lease_until=bindparam("lease"), attempts=D.c.attempts + 1)
    .returning(*D.c)
)

# The ordering keys among `keys` with a row ahead in line (HAND_OVER's test, for rows not inserted yet).
BUSY_KEYS = (
    select(D.c.ordering_key).distinct()
    .where(D.c.ordering_key == any_(bindparam("keys", type_=ARRAY(String))),
           or_(*(D.c.status == literal_column(f"'{st}'") for st in ACTIVE)))
)


class _HandedRow:
    """A delivery inserted `sending` for the taker: its columns, as a claim's row has them."""

    def __init__(self, values: dict[str, Any], new_id: int) -> None:
        for column in D.c:
            setattr(self, column.name, values.get(column.name))
        self.id = new_id


async def mark_before_insert(shared: SharedTransaction, pending: list[dict[str, Any]], taker: ev.DeliveryTaker,
                             room: dict[int, int]) -> list[dict[str, Any]]:
    """Set the values of what `taker` may send at once of the batch's rows about to be inserted (`pending`,
    in insert order) to `sending` for it; returns those values. `room`: what is left of each inbox's room
    (updated). Only the first of a contact's rows in the batch may go: the others wait their turn."""
    now = utcnow()
    firsts: dict[str, dict[str, Any]] = {}
    for values in pending:
        firsts.setdefault(values["ordering_key"], values)
    wanted = []
    for values in firsts.values():
        if values["status"] != "queued" or values["next_attempt_at"] > now:
            continue
        inbox = values["inbox_id"]
        left = room[inbox] = room.get(inbox, taker.room(inbox)) - 1
        if left >= 0:
            wanted.append(values)
    if not wanted:
        return []
    # Core, not the session: the ORM's statement hook would insert the batch's other rows before this read,
    # apart from the deliveries (BatchRows.written_before), where they go in with them in one statement.
    connection = await shared.session.connection()
    busy = set((await connection.execute(BUSY_KEYS, {"keys": [v["ordering_key"] for v in wanted]})).scalars())
    lease = now + timedelta(seconds=taker.lease_seconds)
    marked = [values for values in wanted if values["ordering_key"] not in busy]
    for values in marked:
        values.update(status="sending", claimed_by=taker.name, lease_until=lease, attempts=values["attempts"] + 1)
    return marked


async def hand_over(shared: SharedTransaction, rows: Sequence[Delivery], taker: ev.DeliveryTaker,
                    room: dict[int, int] | None = None) -> list[Any]:
    """Mark what `taker` may send at once of the batch's new `rows` still `queued` for it, in the batch's
    transaction; returns those rows (plain rows, like a claim's), oldest first. The caller hands them to
    the taker once the transaction has committed. `room`: what mark_before_insert left of each inbox's."""
    now = utcnow()
    room = dict(room or {})
    ids: list[int] = []
    for d in sorted(rows, key=lambda r: r.id):
        if d.status != "queued" or d.next_attempt_at > now:
            continue
        left = room[d.inbox_id] = room.get(d.inbox_id, taker.room(d.inbox_id)) - 1
        if left >= 0:
            ids.append(d.id)
    if not ids:
        return []
    result = await shared.session.execute(HAND_OVER, {
        "ids": ids, "me": taker.name, "lease": now + timedelta(seconds=taker.lease_seconds)})
    return sorted(result.all(), key=lambda r: r.id)


def _drop_wake_ups(shared: SharedTransaction, rows: Sequence[Delivery], handed: set[int]) -> None:
    """No "outbox.enqueued" for a conversation whose new deliveries were all handed over: it would only
    send every worker to look for rows that are already on their way."""
    gone = {(d.inbox_id, d.conversation_id) for d in rows if d.id in handed}
    gone -= {(d.inbox_id, d.conversation_id) for d in rows if d.id not in handed}
    if gone:
        shared.events[:] = [e for e in shared.events if not (
            e.name == ev.OUTBOX_ENQUEUED and (e.data.get("inbox_id"), e.data.get("conversation_id")) in gone)]


class Handover:
    """One consumer batch's hand-over to the worker `taker` (None: this process runs none)."""

    def __init__(self, taker: ev.DeliveryTaker | None) -> None:
        self._taker = taker
        self._reserved: ev.DeliveryTaker | None = None  # holds the taker's shutdown until it is told
        self._rows: list[Any] = []
        self._marked: list[dict[str, Any]] = []  # values inserted `sending` for the taker
        self._room: dict[int, int] = {}

    def _reserve(self) -> ev.DeliveryTaker | None:
        if self._reserved is None and self._taker is not None and self._taker.reserve():
            self._reserved = self._taker
        return self._reserved

    async def before_insert(self, shared: SharedTransaction, pending: list[dict[str, Any]]) -> None:
        """In the batch's transaction, before its plain deliveries (`pending`) are inserted."""
        taker = self._reserve()
        if taker is not None:
            self._marked = await mark_before_insert(shared, pending, taker, self._room)

    async def mark(self, shared: SharedTransaction, rows: Sequence[Any]) -> None:
        """In the batch's transaction, after its deliveries are inserted."""
        if not rows:
            return
        taker = self._reserve()
        if taker is None:
            return
        marked = {id(values) for values in self._marked}
        inserted: list[Any] = [_HandedRow(d.values, d.id) for d in rows
                               if isinstance(d, BatchDelivery) and id(d.values) in marked and d.id is not None]
        self._rows = sorted(inserted + await hand_over(shared, rows, taker, self._room), key=lambda r: r.id)
        _drop_wake_ups(shared, rows, {r.id for r in self._rows})

    def committed(self) -> None:
        """The batch committed: the taker starts its deliveries."""
        self._tell(self._rows)

    def close(self) -> None:
        """The batch is over; had it not committed, the taker is told there is nothing to start."""
        self._tell([])

    def _tell(self, rows: list[Any]) -> None:
        taker, self._reserved = self._reserved, None
        if taker is not None:
            taker.adopt(rows)
