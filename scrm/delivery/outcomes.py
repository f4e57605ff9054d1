"""Recording what became of a send (the outbox worker's second write per delivery, group-committed).

A successful send (nearly every one) is one row of one UPDATE per status for the whole batch; retries
and failures one UPDATE each. Every write is guarded by the worker's claim: a row recovered by another
worker meanwhile is left alone, it owns the outcome now.

Outcome events: every outcome is pushed live (`message.updated`, `delivery.updated`: the agents' delivery
ticks), but it is logged for the event log's consumer only when a work listener acts on it: an outgoing
webhook subscribed to that event, or a delivery of another kind than a plain message (WeCom session
states and codes, broadcasts, 群发). Logging every reply's two outcome events made them nearly half of
the events the consumer claimed, decoded and dispatched, only for every listener to ignore them.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, and_, bindparam, case, exists, update

from scrm import events as ev
from scrm.db.models import ContactIdentity, Delivery, Message
from scrm.domain import PermanentSendError, SendResult, TransientSendError
from scrm.services.desk import webhooks_out
from scrm.services.marketing import wechat_mass
from scrm.services.uow import Tx

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from scrm.context import AppContext
    from scrm.settings import WorkerSettings

D: Table = Delivery.__table__
M: Table = Message.__table__
Decided = tuple["Outcome", str, dict[str, Any], dict[str, Any]]  # outcome, status, delivery values, message values
OUTCOME_EVENTS = (ev.MESSAGE_UPDATED, ev.DELIVERY_UPDATED)
PLAIN_KIND = "message"  # a conversation message: no work listener acts on its outcome but a webhook


async def logged_outcome_events(ctx: AppContext) -> frozenset[str]:
    """The outcome events every outcome logs (the others only kinds other than plain messages): those an
    active outgoing webhook subscribes to (cached like the subscriptions, as the desk listener asks)."""
    return frozenset([name for name in OUTCOME_EVENTS if await webhooks_out.wanted(ctx, name)])


@dataclass(frozen=True)
class Outcome:
    delivery: Any  # a claimed deliveries row
    channel: str
    result: SendResult | None
    error: Exception | None


def backoff(cfg: WorkerSettings, attempts: int) -> float:
    delay = min(cfg.backoff_max, cfg.backoff_base ** max(attempts, 1))
    return delay * random.uniform(0.8, 1.2)


def decide(o: Outcome, now: datetime, cfg: WorkerSettings) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(status, delivery values, message values) for one outcome."""
    values: dict[str, Any] = {"lease_until": None}
    error = o.error
    if o.result is not None:
        status = "delivered" if o.result.delivered else "sent"
        values |= {"status": status, "external_id": o.result.external_id, "sent_at": now, "last_error": None}
        return status, values, {"delivery_status": status, "delivery_error": None, "sent_at": now}
    if isinstance(error, TransientSendError) and o.delivery.attempts < cfg.max_attempts:
        delay = error.retry_after if error.retry_after is not None else backoff(cfg, o.delivery.attempts)
        reason = f"{error.reason} (retrying)"
        values |= {"status": "queued", "claimed_by": None, "next_attempt_at": now + timedelta(seconds=delay),
                   "last_error": reason, "error_code": error.code}
        return "queued", values, {"delivery_error": reason}
    assert error is not None
    reason = getattr(error, "reason", str(error))
    values |= {"status": "failed", "last_error": reason, "error_code": getattr(error, "code", None)}
    return "failed", values, {"delivery_status": "failed", "delivery_error": reason}


async def record_outcomes(tx: Tx, decided: list[Decided], now: datetime, me: str, mark_sent: Any,
                          logged: frozenset[str] | None = None, live: set[str] | None = None,
                          waiting: Any = None, quiet: set[int] | None = None,
                          with_messages: Any = None) -> set[int]:
    """Record a batch of outcomes, guarded by our claim (`me`); returns the ids it applied to.

    `mark_sent`: the prepared array statement for successful sends (PostgreSQL), or None. `logged` (with
    `live`): the outcome events a plain message's outcome logs; the ids of those it only pushes live
    are added to `live` (the caller leaves them out of the log). None: every event is logged.
    `waiting` (with `quiet`): the column telling whether a due queued row of the same ordering key waits
    behind a sent row (OutboxStatements.waiting); the sent rows with none are added to `quiet`.
    `with_messages` (PostgreSQL): OutboxStatements.mark_sent_with_messages, which records a batch of
    successful sends and updates their messages in one statement (telling `waiting` too).
    """
    applied: set[int] = set()
    messages_done: set[int] = set()  # applied deliveries whose message the statement updated too
    s = tx.session
    for status in ("sent", "delivered"):
        group = [o for o, st, _, _ in decided if st == status]
        if not group:
            continue
        if with_messages is not None and _distinct_messages(group):
            rows = await s.execute(with_messages, {
                "ids": [o.delivery.id for o in group], "me": me, "new_status": status, "now": now,
                "exts": [o.result.external_id if o.result else None for o in group],
                "msg_exts": _message_exts(group)})
            for row in rows.all():
                applied.add(row[0])
                messages_done.add(row[0])
                if quiet is not None and not row[1]:
                    quiet.add(row[0])
            continue
        if mark_sent is not None:
            rows = await s.execute(mark_sent, {
                "ids": [o.delivery.id for o in group], "me": me, "new_status": status, "now": now,
                "exts": [o.result.external_id if o.result else None for o in group]})
        else:
            ours = and_(D.c.claimed_by == me, D.c.status.in_(("claimed", "sending")))
            external = {o.delivery.id: o.result.external_id for o in group if o.result and o.result.external_id}
            stmt = (
                update(D)
                .where(D.c.id.in_([o.delivery.id for o in group]), ours)
                .values(status=status, sent_at=now, last_error=None, lease_until=None,
                        external_id=case(external, value=D.c.id, else_=None) if external else None)
            )
            rows = await s.execute(stmt.returning(D.c.id, waiting) if waiting is not None else stmt.returning(D.c.id),
                                   {"now": now} if waiting is not None else None)
        for row in rows.all():
            applied.add(row[0])
            if quiet is not None and len(row) > 1 and not row[1]:
                quiet.add(row[0])
    for o, status, values, _ in decided:
        if status in ("sent", "delivered"):
            continue
        ours = and_(D.c.claimed_by == me, D.c.status.in_(("claimed", "sending")))  # built only when needed (rare)
        res = await s.execute(update(D).where(D.c.id == o.delivery.id, ours).values(**values))
        if res.rowcount == 1:  # type: ignore[attr-defined]
            applied.add(o.delivery.id)
    done = [(o, status, msg_values) for o, status, _, msg_values in decided if o.delivery.id in applied]
    await _update_messages(s, [d for d in done if d[0].delivery.id not in messages_done])
    for o, status, msg_values in done:
        emitted = len(tx.events)
        await apply_outcome(tx, o, status, msg_values)
        if live is not None and logged is not None and o.delivery.kind == PLAIN_KIND:
            live.update(e.id for e in tx.events[emitted:] if e.name in OUTCOME_EVENTS and e.name not in logged)
    return applied


def sent_alone(outcomes: list[Outcome], logged: frozenset[str]) -> str | None:
    """The status ("sent" or "delivered") when a batch of outcomes is nothing but successful sends of plain
    messages of that one status (each its own message), whose outcome events no work listener wants (only
    pushed live): one statement records them all, with nothing to log. Else None."""
    if logged or not outcomes:
        return None
    statuses = set()
    for o in outcomes:
        if o.result is None or o.delivery.kind != PLAIN_KIND:
            return None
        statuses.add("delivered" if o.result.delivered else "sent")
    if len(statuses) != 1 or not _distinct_messages(outcomes):
        return None
    return statuses.pop()


def sent_alone_args(group: list[Outcome], now: datetime, me: str, status: str) -> tuple[Any, ...]:
    """The positional arguments of batching.MARK_SENT_ALONE."""
    return ([o.delivery.id for o in group], [o.result.external_id if o.result else None for o in group],
            _message_exts(group), now, status, me)


def _distinct_messages(group: list[Outcome]) -> bool:
    """No two deliveries of the group update one message (one UPDATE ... FROM updates a row only once)."""
    ids = [o.delivery.message_id for o in group if o.delivery.message_id is not None]
    return len(ids) == len(set(ids))


def _message_exts(group: list[Outcome]) -> list[str | None]:
    """The external id each delivery's message takes: the platform's id, unless an earlier message of the
    batch takes it (as the row-by-row updates did: the second saw the first's and kept its own)."""
    seen: set[tuple[int, str]] = set()
    out: list[str | None] = []
    for o in group:
        ext = o.result.external_id if o.result is not None else None
        key = (o.delivery.inbox_id, ext) if ext else None
        if key is None or key in seen or o.delivery.message_id is None:
            out.append(None)
            continue
        seen.add(key)
        out.append(ext)
    return out


async def _update_messages(s: AsyncSession, done: list[tuple[Outcome, str, dict[str, Any]]]) -> None:
    """The conversation messages of a batch of outcomes: one statement per shape of change (nearly always
    one for the whole batch). The platform's message id is set where no other message of the inbox has it,
    checked by the UPDATE itself (rows in order: a second message of the batch with the same id sees the
    first's), not by a read of its own."""
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for o, _, msg_values in done:
        d = o.delivery
        if d.message_id is None:
            continue
        values = dict(msg_values)
        ext = o.result.external_id if o.result is not None else None
        if ext:
            values["external_id"] = ext
        params = {f"v_{k}": v for k, v in values.items()} | {"m_id": d.message_id}
        shapes.setdefault(tuple(sorted(values)), []).append(params)
    for keys, rows in shapes.items():
        await s.execute(_message_update(keys), rows)


@functools.lru_cache(maxsize=16)
def _message_update(keys: tuple[str, ...]) -> Any:
    values: dict[str, Any] = {k: bindparam(f"v_{k}", type_=M.c[k].type) for k in keys}
    if "external_id" in values:  # unique per inbox: kept as it is when another message has it already
        ext = values["external_id"]
        other = M.alias("other")
        values["external_id"] = case(
            (exists().where(other.c.inbox_id == M.c.inbox_id, other.c.external_id == ext), M.c.external_id),
            else_=ext)
    return update(M).where(M.c.id == bindparam("m_id")).values(values)


async def apply_outcome(tx: Tx, o: Outcome, status: str, msg_values: dict[str, Any]) -> None:
    """The outcome's other effects (its message is updated with the batch's, _update_messages): a 群发
    batch's recipients, an unreachable identity, events."""
    s, d = tx.session, o.delivery
    if d.message_id is not None:
        tx.emit(ev.MESSAGE_UPDATED, message_id=d.message_id, conversation_id=d.conversation_id,
                delivery_status=msg_values.get("delivery_status"))
    error = o.error
    if d.kind == wechat_mass.KIND:  # a 群发 batch's recipients follow its control delivery
        await wechat_mass.settle_batch(tx, d, status, o.result.external_id if o.result else None,
                                       getattr(error, "reason", None) if error else None,
                                       getattr(error, "code", None) if error else None)
    if isinstance(error, PermanentSendError) and error.contact_unreachable and d.identity_id:
        identity = await s.get(ContactIdentity, d.identity_id)
        if identity is not None:
            identity.reachable = False
            identity.unreachable_reason = error.reason
            tx.emit(ev.CONTACT_UPDATED, contact_id=identity.contact_id, identity_id=identity.id)
    tx.emit(ev.DELIVERY_UPDATED, delivery_id=d.id, status=status, conversation_id=d.conversation_id, kind=d.kind)
