"""SLA policies and clocks: due times in business hours, warnings before a breach, breach events.

The clock starts when a human is expected to answer (the conversation enters the queue, is taken
by an agent, or is created already outside the bot). Due times and the per-conversation figures
reports need live in desk_conversation_stats; a periodic checker emits `sla.warning` and
`sla.breached` once per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import BigInteger, DateTime, Integer, String, Text, bindparam, case, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot_flows.conditions import BusinessHours
from scrm.db.database import SKIPS_HELD_BACK_STATS, SharedTransaction, shared_for
from scrm.db.models import Conversation, utcnow
from scrm.db.models_desk import ConversationStats, SlaPolicy
from scrm.event_rows import TABLES
from scrm.services.desk.business_time import add_business_seconds, business_seconds
from scrm.services.desk.settings import business_hours
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.sla")
SLA_WARNING = "sla.warning"
SLA_BREACHED = "sla.breached"
KINDS = ("first_response", "next_response", "resolution")
PRIORITIES = ("low", "normal", "high", "urgent")
CHECK_INTERVAL = 15.0
MAX_MINUTES = 60 * 24 * 365


class SlaPolicyIn(BaseModel):
    """An SLA policy as saved by an admin (unknown fields and impossible targets are rejected)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120)
    priority: str | None = None
    inbox_id: int | None = None
    first_response_minutes: int | None = Field(None, gt=0, le=MAX_MINUTES)
    next_response_minutes: int | None = Field(None, gt=0, le=MAX_MINUTES)
    resolution_minutes: int | None = Field(None, gt=0, le=MAX_MINUTES)
    warn_before_minutes: int = Field(15, ge=0, le=MAX_MINUTES)
    business_hours: bool = True
    active: bool = True

    @model_validator(mode="after")
    def _check(self) -> SlaPolicyIn:
        if self.priority is not None and self.priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)} (or null for any)")
        targets = [t for t in (self.first_response_minutes, self.next_response_minutes, self.resolution_minutes) if t]
        if not targets:
            raise ValueError("set at least one target: first_response_minutes, next_response_minutes or resolution_minutes")
        if self.first_response_minutes and self.resolution_minutes and self.resolution_minutes < self.first_response_minutes:
            raise ValueError("resolution_minutes cannot be shorter than first_response_minutes")
        if "warn_before_minutes" not in self.model_fields_set:
            self.warn_before_minutes = min(15, min(targets) // 4)  # a default that fits short targets
        if self.warn_before_minutes >= min(targets):
            raise ValueError("warn_before_minutes must be shorter than every target (the warning would come before the clock starts)")
        return self


@functools.cache
def _choose_policy_statement() -> Any:
    """Built once (every handoff to the queue asks): building and hashing it cost more than running it."""
    inbox_id, priority = bindparam("inbox_id", type_=Integer), bindparam("priority", type_=String)
    return (
        select(SlaPolicy)
        .where(SlaPolicy.active.is_(True),
               or_(SlaPolicy.inbox_id == inbox_id, SlaPolicy.inbox_id.is_(None)),
               or_(SlaPolicy.priority == priority, SlaPolicy.priority.is_(None)))
        .order_by(case((SlaPolicy.inbox_id.is_(None), 1), else_=0), case((SlaPolicy.priority.is_(None), 1), else_=0),
                  SlaPolicy.id)
        .limit(1)
    )


# A consumer batch's fact: the policy chosen per (inbox, priority), by id (event_batch drops it if the batch
# writes the policies): a batch's handoffs on one inbox ask once.
SLA_POLICIES = "sla_policies"


async def choose_policy(tx: Tx, inbox_id: int, priority: str) -> SlaPolicy | None:
    """The most specific active policy: inbox+priority, then inbox, then priority, then the catch-all."""
    shared = shared_for(tx.session)
    chosen: dict[tuple[int, str], int | None] | None = None
    if shared is not None:
        chosen = shared.facts.setdefault(SLA_POLICIES, {})
        if (inbox_id, priority) in chosen:
            policy_id = chosen[(inbox_id, priority)]
            return None if policy_id is None else await tx.session.get(SlaPolicy, policy_id)
    # A consumer's batch writes no policy: its pending new rows (a handoff's note and audit entry) need not be
    # flushed for this read; they wait for the batch's next flush and go in with the others (one INSERT).
    with contextlib.nullcontext() if shared is None else tx.session.no_autoflush:
        policy = (await tx.session.scalars(_choose_policy_statement(),
                                           {"inbox_id": inbox_id, "priority": priority})).first()
    if chosen is not None:
        chosen[(inbox_id, priority)] = policy.id if policy is not None else None
    return policy


# A consumer batch's fact: the conversations it found no stats row for (event_batch.preload).
STATS_MISSING = "stats_missing"


@functools.cache
def _insert_stats_statement(dialect: str) -> Any:
    """A new conversation's stats row, inserted (unless someone else did) and loaded; built once per
    dialect (building and hashing it cost more than running it)."""
    ins = pg_insert if dialect == "postgresql" else sqlite_insert
    t = ConversationStats.__table__
    values = {k: bindparam(k, type_=t.c[k].type) for k in ("conversation_id", "inbox_id", "priority", "created_at",
                                                            "agent_id")}
    inserted = (ins(ConversationStats)
                .values(**values, human_involved=False, handoffs=0, warned=[], breached=[])
                .on_conflict_do_nothing().returning(ConversationStats))
    return (select(ConversationStats).from_statement(inserted)
            .execution_options(populate_existing=True, **{SKIPS_HELD_BACK_STATS: True}))


# A consumer batch's fact: its new conversations (a conversation.created to book) with no stats row yet.
STATS_NEW = "stats_new"


@functools.cache
def _insert_new_stats_statement() -> Any:
    """PostgreSQL: the stats rows of a batch's new conversations, one INSERT over arrays (its text the same
    whatever their number), loaded; a row someone else inserted meanwhile is left out (read and locked apart)."""
    t = ConversationStats.__table__
    columns = (("conversation_id", BigInteger), ("inbox_id", BigInteger), ("agent_id", BigInteger),
               ("priority", Text), ("created_at", DateTime(timezone=True)))
    names = ", ".join(name for name, _ in columns)
    inserted = text(
        f"INSERT INTO {t.name} ({names}, human_involved, handoffs, warned, breached) "
        f"SELECT {', '.join(f'v.{name}' for name, _ in columns)}, false, 0, '[]'::json, '[]'::json "
        f"FROM unnest({', '.join(f':{name}' for name, _ in columns)}) AS v({names}) ORDER BY v.conversation_id "
        f"ON CONFLICT DO NOTHING RETURNING {', '.join(c.name for c in t.c)}"
    ).bindparams(*(bindparam(name, type_=ARRAY(kind)) for name, kind in columns))
    return (select(ConversationStats).from_statement(inserted.columns(*t.c))
            .execution_options(populate_existing=True, **{SKIPS_HELD_BACK_STATS: True, TABLES: (t.name,)}))


async def _insert_new_stats(tx: Tx, shared: SharedTransaction, created: set[int]) -> None:
    """Insert the stats rows of the batch's new conversations (`created`) together, lock them for the batch."""
    conversations = [c for c in [await tx.session.get(Conversation, cid) for cid in sorted(created)] if c is not None]
    created.clear()
    missing = shared.facts.get(STATS_MISSING) or set()
    missing.difference_update(c.id for c in conversations)  # inserted now, or by someone else: read and locked
    if not conversations:
        return
    params = {"conversation_id": [c.id for c in conversations], "inbox_id": [c.inbox_id for c in conversations],
              "agent_id": [c.assignee_id for c in conversations], "priority": [c.priority for c in conversations],
              "created_at": [c.created_at for c in conversations]}
    for stats in (await tx.session.scalars(_insert_new_stats_statement(), params)).all():
        shared.locked.add(("desk_conversation_stats", stats.conversation_id))
        shared.loaded.append(stats)


async def ensure_stats(tx: Tx, conv: Conversation) -> ConversationStats:
    """The conversation's stats row, created if missing (safe against a concurrent insert), locked."""
    shared = shared_for(tx.session)
    stats: ConversationStats | None = None
    if shared is not None and ("desk_conversation_stats", conv.id) in shared.locked:
        stats = await tx.session.get(ConversationStats, conv.id)  # locked and loaded with the consumer's batch
    elif shared is None or conv.id not in (shared.facts.get(STATS_MISSING) or ()):
        stats = await tx.session.get(ConversationStats, conv.id, with_for_update=True, populate_existing=True)
    if stats is not None:  # the usual case: one statement (none in a consumer's batch)
        return stats
    created = shared.facts.get(STATS_NEW) if shared is not None and not shared.savepoints else None
    if created and conv.id in created and tx.session.bind is not None and tx.session.bind.dialect.name == "postgresql":
        assert shared is not None
        await _insert_new_stats(tx, shared, created)  # with the batch's other new conversations
        return await ensure_stats(tx, conv)
    # A new conversation (the consumer's batch found no row for it): inserted and loaded in one statement;
    # a row inserted meanwhile by someone else is read (and locked) instead.
    values = {"conversation_id": conv.id, "inbox_id": conv.inbox_id, "priority": conv.priority,
              "created_at": conv.created_at, "agent_id": conv.assignee_id}
    dialect = tx.session.bind.dialect.name if tx.session.bind else "sqlite"
    stats = (await tx.session.scalars(_insert_stats_statement(dialect), values)).first()
    if stats is None:
        stats = await tx.session.get(ConversationStats, conv.id, with_for_update=True, populate_existing=True)
    assert stats is not None
    if shared is not None:  # locked for the rest of the consumer's batch: its next events need no statement
        shared.locked.add(("desk_conversation_stats", conv.id))
        shared.loaded.append(stats)
    return stats


async def _hours_for(tx: Tx, policy: SlaPolicy | None) -> BusinessHours | None:
    return await business_hours(tx.session) if policy is None or policy.business_hours else None


def _due(hours: BusinessHours | None, start: datetime, minutes: int | None) -> datetime | None:
    return add_business_seconds(hours, start, minutes * 60) if minutes else None


async def start_clock(tx: Tx, conv: Conversation, stats: ConversationStats, at: datetime) -> None:
    """Start the SLA clock (once) with the policy for the conversation's inbox and priority."""
    if stats.sla_started_at is not None:
        return
    policy = await choose_policy(tx, conv.inbox_id, conv.priority)
    stats.sla_started_at = at
    stats.priority = conv.priority
    await _apply_policy(tx, stats, policy)


async def _apply_policy(tx: Tx, stats: ConversationStats, policy: SlaPolicy | None) -> None:
    stats.policy_id = policy.id if policy else None
    if policy is None or stats.sla_started_at is None:
        stats.first_response_due = stats.resolution_due = stats.next_response_due = None
        stats.next_check_at = None
        return
    hours = await _hours_for(tx, policy)
    start = stats.sla_started_at
    stats.first_response_due = _due(hours, start, policy.first_response_minutes) if stats.first_response_at is None else stats.first_response_due
    stats.resolution_due = _due(hours, start, policy.resolution_minutes)
    _schedule(stats, policy)


async def reprioritize(tx: Tx, conv: Conversation, stats: ConversationStats) -> None:
    """The priority changed: pick the policy again and recompute due times from the clock's start."""
    if stats.priority == conv.priority:
        return
    stats.priority = conv.priority
    if stats.sla_started_at is not None and stats.resolved_at is None:
        await _apply_policy(tx, stats, await choose_policy(tx, conv.inbox_id, conv.priority))


async def _policy(tx: Tx, stats: ConversationStats) -> SlaPolicy | None:
    return await tx.session.get(SlaPolicy, stats.policy_id) if stats.policy_id else None


def _breach(tx: Tx, stats: ConversationStats, kind: str, due: datetime, at: datetime) -> None:
    if kind not in stats.breached:
        stats.breached = [*stats.breached, kind]
        tx.emit(SLA_BREACHED, conversation_id=stats.conversation_id, inbox_id=stats.inbox_id, kind=kind,
                due_at=due.isoformat(), breached_at=at.isoformat(), priority=stats.priority)


async def on_agent_reply(tx: Tx, stats: ConversationStats, at: datetime) -> None:
    """A human answered: the first-response or next-response clock stops."""
    stats.human_involved = True
    if stats.first_response_at is None:
        stats.first_response_at = at
        start = stats.sla_started_at or stats.created_at
        policy = await _policy(tx, stats)
        stats.first_response_secs = business_seconds(await _hours_for(tx, policy), start, at)
        if stats.first_response_due and at > stats.first_response_due:
            _breach(tx, stats, "first_response", stats.first_response_due, at)
    elif stats.next_response_due is not None:
        if at > stats.next_response_due:
            _breach(tx, stats, "next_response", stats.next_response_due, at)
    stats.next_response_due = None
    stats.warned = [k for k in stats.warned if k != "next_response"]
    _schedule(stats, await _policy(tx, stats))


async def on_customer_message(tx: Tx, stats: ConversationStats, at: datetime) -> None:
    """The customer wrote after a human answer: the next-response clock starts."""
    if stats.first_response_at is None or stats.next_response_due is not None or stats.resolved_at is not None:
        return
    policy = await _policy(tx, stats)
    if policy is None or not policy.next_response_minutes:
        return
    stats.next_response_due = _due(await _hours_for(tx, policy), at, policy.next_response_minutes)
    _schedule(stats, policy)


async def on_resolved(tx: Tx, stats: ConversationStats, at: datetime) -> None:
    """Resolution stops every clock and records whether the SLA was met."""
    stats.resolved_at = at
    policy = await _policy(tx, stats)
    start = stats.sla_started_at or stats.created_at
    stats.resolution_secs = business_seconds(await _hours_for(tx, policy), stats.created_at, at)
    if stats.resolution_due and at > stats.resolution_due:
        _breach(tx, stats, "resolution", stats.resolution_due, at)
    if stats.first_response_at is None and stats.first_response_due and at > stats.first_response_due:
        _breach(tx, stats, "first_response", stats.first_response_due, at)
    stats.next_response_due = None
    stats.next_check_at = None
    stats.sla_met = None if policy is None or start is None else not stats.breached


async def on_reopened(tx: Tx, stats: ConversationStats, at: datetime) -> None:
    """A reopened conversation is answered again like a new customer message."""
    stats.resolved_at = None
    stats.resolution_secs = None
    stats.sla_met = None
    await on_customer_message(tx, stats, at)
    _schedule(stats, await _policy(tx, stats))


def _pending(stats: ConversationStats) -> list[tuple[str, datetime]]:
    if stats.resolved_at is not None:
        return []
    out = []
    if stats.first_response_at is None and stats.first_response_due:
        out.append(("first_response", stats.first_response_due))
    if stats.next_response_due:
        out.append(("next_response", stats.next_response_due))
    if stats.resolution_due:
        out.append(("resolution", stats.resolution_due))
    return out


def _schedule(stats: ConversationStats, policy: SlaPolicy | None) -> None:
    """next_check_at = the earliest warning or breach still to announce."""
    warn = timedelta(minutes=policy.warn_before_minutes if policy else 0)
    times = []
    for kind, due in _pending(stats):
        if kind not in stats.warned and warn:
            times.append(due - warn)
        elif kind not in stats.breached:
            times.append(due)
    stats.next_check_at = min(times) if times else None


async def check_due(ctx: AppContext, now: datetime | None = None, batch: int = 200) -> int:
    """Emit warnings and breaches that are due at `now`; returns how many events were emitted."""
    now = now or utcnow()
    emitted = 0
    async with unit_of_work(ctx) as tx:
        stmt = (select(ConversationStats).where(ConversationStats.next_check_at <= now)
                .order_by(ConversationStats.next_check_at).limit(batch))
        if ctx.db.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = list((await tx.session.scalars(stmt)).all())
        policies: dict[int, SlaPolicy | None] = {}
        for stats in rows:
            pid = stats.policy_id or 0
            if pid not in policies:
                policies[pid] = await tx.session.get(SlaPolicy, pid) if pid else None
            policy = policies[pid]
            warn = timedelta(minutes=policy.warn_before_minutes if policy else 0)
            for kind, due in _pending(stats):
                if now >= due and kind not in stats.breached:
                    _breach(tx, stats, kind, due, now)
                    if kind not in stats.warned:
                        stats.warned = [*stats.warned, kind]
                    emitted += 1
                elif warn and now >= due - warn and kind not in stats.warned:
                    stats.warned = [*stats.warned, kind]
                    tx.emit(SLA_WARNING, conversation_id=stats.conversation_id, inbox_id=stats.inbox_id, kind=kind,
                            due_at=due.isoformat(), minutes_left=max(0, int((due - now).total_seconds() // 60)),
                            priority=stats.priority)
                    emitted += 1
            _schedule(stats, policy)
            if stats.next_check_at is not None and stats.next_check_at <= now:
                stats.next_check_at = None  # everything announced; nothing left to check
    return emitted


def status_of(stats: ConversationStats | None, now: datetime | None = None) -> dict[str, Any]:
    """What the inbox list shows: the nearest due time and whether anything is breached."""
    if stats is None or stats.policy_id is None:
        return {"policy_id": None, "breached": [], "next_due": None, "state": "none"}
    now = now or utcnow()
    pending = _pending(stats)
    nearest = min(pending, key=lambda p: p[1]) if pending else None
    state = "breached" if stats.breached else ("warning" if stats.warned else "ok")
    if nearest and nearest[1] <= now:
        state = "breached"
    return {"policy_id": stats.policy_id, "breached": list(stats.breached), "warned": list(stats.warned),
            "next_due": {"kind": nearest[0], "at": nearest[1].isoformat()} if nearest else None,
            "state": state, "sla_met": stats.sla_met}


async def run_sla_checker(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job: announce warnings and breaches, and close solved tickets past their reopen window."""
    from scrm.services.tickets.workflow import close_stale_tickets

    while not stop.is_set():
        try:
            await check_due(ctx)
            await close_stale_tickets(ctx)
        except Exception:
            log.exception("SLA check failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CHECK_INTERVAL)
