"""A consumer batch's new deliveries handed straight to this process's outbox worker.

The bot's answer is a delivery row written by the event log consumer's batch. Left to the claim loop it
waits for two more transactions before its send: the claim (look up the queue, mark it claimed) and the
mark `sending`, each a commit, each queued behind the worker's other work (25-100 ms of the customer's
wait, measured with bench/bot_reply.py). When the process runs an outbox worker, the batch marks its
new deliveries `sending` for that worker in its own transaction, and the worker starts them once the
batch has committed: the row is still committed as `sending`, by its worker, before the channel is
called, so a kill -9 at any point leaves it as the claim path would (recovered when that worker is
found dead: resent with the same idempotency key, or "outcome unknown" where the channel has none).

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

from sqlalchemy import BigInteger, Table, and_, any_, bindparam, exists, literal_column, or_, update
from sqlalchemy.dialects.postgresql import ARRAY

from scrm import events as ev
from scrm.db.models import Delivery, utcnow
from scrm.delivery.batching import ACTIVE

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


async def hand_over(shared: SharedTransaction, rows: Sequence[Delivery], taker: ev.DeliveryTaker) -> list[Any]:
    """Mark what `taker` may send at once of the batch's new `rows` `sending` for it, in the batch's
    transaction; returns those rows (plain rows, like a claim's), oldest first. The caller hands them to
    the taker once the transaction has committed."""
    now = utcnow()
    room: dict[int, int] = {}
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
    handed = sorted(result.all(), key=lambda r: r.id)
    _drop_wake_ups(shared, rows, {r.id for r in handed})
    return handed


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

    async def mark(self, shared: SharedTransaction, rows: Sequence[Delivery]) -> None:
        """In the batch's transaction, after its deliveries are inserted."""
        if not rows or self._taker is None or not self._taker.reserve():
            return
        self._reserved = self._taker
        self._rows = await hand_over(shared, rows, self._taker)

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
