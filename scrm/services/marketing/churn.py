"""Churn warning (流失预警): a transparent per-contact churn-risk score and a daily notice to marketers.

The score is the sum of the points of the rules a contact meets (capped at 100), with the weights
admins set in the marketing settings; every rule met is kept as a reason with the numbers behind it,
so anybody can see why a contact is at risk. Only contacts who ever wrote to us are scored: somebody
who never spoke cannot drift away from a conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, select, true

from scrm.db.models import Agent, Contact, Conversation, Message, Ticket, utcnow
from scrm.db.models_campaigns import ChurnScore
from scrm.db.models_desk import CsatSurvey, DeskSetting
from scrm.services.marketing import settings as marketing_settings
from scrm.services.marketing.settings import ChurnSettings
from scrm.services.uow import unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.churn")
OPEN_TICKETS = ("new", "open", "pending")
SHANGHAI = ZoneInfo("Asia/Shanghai")  # "daily" means the marketers' calendar day
CHECK_EVERY = 600.0  # seconds between checks whether today's run is due
RUN_KEY = "churn_run"
NOTIFY_ROLES = ("marketer", "admin")


@dataclass
class Signals:
    """What we know of one contact's relationship with us."""

    last_inbound_at: datetime | None = None
    recent_messages: int = 0  # in the last period
    earlier_messages: int = 0  # in the period before it
    waiting_since: datetime | None = None  # oldest unanswered customer message of an open conversation
    worst_csat: int | None = None  # lowest recent rating
    open_tickets: int = 0
    opted_out: list[str] | None = None  # channels (or "all") they opted out of broadcasts on


def explain(sig: Signals, rules: ChurnSettings, now: datetime) -> tuple[int, list[dict[str, Any]]]:
    """(score 0-100, reasons): each reason is {rule, points, ...the numbers that triggered it}."""
    w = rules.weights
    reasons: list[dict[str, Any]] = []
    if sig.last_inbound_at is not None:
        days = (now - sig.last_inbound_at).days
        if days >= rules.silent_days and w.silent:
            reasons.append({"rule": "silent", "points": w.silent, "days": days, "limit_days": rules.silent_days})
    if sig.earlier_messages > 0 and sig.recent_messages < sig.earlier_messages and w.fading:
        reasons.append({"rule": "fading", "points": w.fading, "recent": sig.recent_messages,
                        "earlier": sig.earlier_messages, "period_days": rules.period_days})
    if sig.waiting_since is not None and w.unanswered:
        hours = int((now - sig.waiting_since).total_seconds() // 3600)
        if hours >= rules.unanswered_hours:
            reasons.append({"rule": "unanswered", "points": w.unanswered, "hours": hours})
    if sig.worst_csat is not None and sig.worst_csat <= 2 and w.low_csat:
        reasons.append({"rule": "low_csat", "points": w.low_csat, "rating": sig.worst_csat,
                        "within_days": rules.csat_days})
    if sig.open_tickets and w.open_tickets:
        reasons.append({"rule": "open_tickets", "points": w.open_tickets * min(sig.open_tickets, 2),
                        "count": sig.open_tickets})
    if sig.opted_out and w.opted_out:
        reasons.append({"rule": "opted_out", "points": w.opted_out, "channels": sorted(sig.opted_out)})
    return min(100, sum(r["points"] for r in reasons)), reasons


async def _signals(session: Any, rules: ChurnSettings, now: datetime, only: int | None = None) -> dict[int, Signals]:
    """Every contact's signals (or one contact's: `only`), a few grouped queries in all."""
    period = timedelta(days=rules.period_days)

    def one(col: Any) -> Any:
        return col == only if only is not None else true()

    out: dict[int, Signals] = defaultdict(Signals)
    rows = await session.execute(
        select(Conversation.contact_id, func.max(Message.created_at),
               func.sum(case((Message.created_at >= now - period, 1), else_=0)),
               func.sum(case((and_(Message.created_at >= now - 2 * period, Message.created_at < now - period), 1),
                             else_=0)))
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Message.direction == "in", one(Conversation.contact_id)).group_by(Conversation.contact_id))
    for cid, last, recent, earlier in rows:
        s = out[cid]
        s.last_inbound_at, s.recent_messages, s.earlier_messages = last, int(recent or 0), int(earlier or 0)
    for cid, since in await session.execute(
            select(Conversation.contact_id, func.min(Conversation.waiting_since))
            .where(Conversation.waiting_since.is_not(None), Conversation.status != "resolved",
                   one(Conversation.contact_id))
            .group_by(Conversation.contact_id)):
        if cid in out:
            out[cid].waiting_since = since
    for cid, worst in await session.execute(
            select(CsatSurvey.contact_id, func.min(CsatSurvey.rating))
            .where(CsatSurvey.status == "answered", CsatSurvey.answered_at >= now - timedelta(days=rules.csat_days),
                   one(CsatSurvey.contact_id))
            .group_by(CsatSurvey.contact_id)):
        if cid in out:
            out[cid].worst_csat = worst
    for cid, n in await session.execute(
            select(Ticket.contact_id, func.count()).where(Ticket.status.in_(OPEN_TICKETS), one(Ticket.contact_id))
            .group_by(Ticket.contact_id)):
        if cid in out:
            out[cid].open_tickets = int(n)
    # All live contacts, filtered here: an IN list of every scored id would pass the drivers' parameter limits.
    live = {cid: opt_outs for cid, opt_outs in await session.execute(
        select(Contact.id, Contact.opt_outs).where(Contact.merged_into_id.is_(None), one(Contact.id))) if cid in out} \
        if out else {}
    for cid in list(out):
        if cid not in live:
            del out[cid]  # merged away: its messages count for the survivor through its own conversations
            continue
        channels = [k.split(":", 1)[1] for k, v in (live[cid] or {}).items() if k.startswith("broadcast:") and v is True]
        out[cid].opted_out = channels or None
    return out


async def contact_signals(session: Any, contact_id: int, rules: ChurnSettings, now: datetime) -> Signals | None:
    """One contact's signals (None when the contact never wrote)."""
    return (await _signals(session, rules, now, only=contact_id)).get(contact_id)


async def recompute(ctx: AppContext, now: datetime | None = None) -> dict[str, Any]:
    """Score every contact who ever wrote; returns counts and the ids that crossed the threshold now."""
    now = now or utcnow()
    async with unit_of_work(ctx) as tx:
        s = tx.session
        rules = (await marketing_settings.load(s)).churn
        signals = await _signals(s, rules, now)
        old = {r.contact_id: r for r in (await s.scalars(select(ChurnScore))).all()}
        crossed: list[int] = []
        for cid, sig in signals.items():
            score, reasons = explain(sig, rules, now)
            at_risk = score >= rules.threshold
            row = old.pop(cid, None)
            if row is None:
                row = ChurnScore(contact_id=cid, at_risk=False)
                s.add(row)
            if at_risk and not row.at_risk:
                row.crossed_at = now
                crossed.append(cid)
            row.score, row.reasons, row.at_risk, row.computed_at = score, reasons, at_risk, now
        for gone in old.values():  # merged or deleted contacts
            await s.delete(gone)
        if crossed:
            await _notify(tx, crossed, now)
    log.info("churn scores: %d contacts scored, %d crossed the threshold", len(signals), len(crossed))
    return {"scored": len(signals), "crossed": crossed}


async def _notify(tx: Any, crossed: list[int], now: datetime) -> None:
    """One notification per marketer (and admin) for today's newly at-risk contacts."""
    from scrm.services.desk.notifications import notify

    names = (await tx.session.execute(select(Contact.id, Contact.name).where(Contact.id.in_(crossed[:5])))).all()
    agents = (await tx.session.scalars(select(Agent.id).where(Agent.active.is_(True),
                                                              Agent.role.in_(NOTIFY_ROLES)))).all()
    day = now.astimezone(SHANGHAI).date().isoformat()
    for agent_id in agents:
        await notify(tx, agent_id, "churn_risk", dedup_key=f"churn:{day}:{agent_id}",
                     data={"count": len(crossed), "contacts": [{"id": i, "name": n} for i, n in names], "day": day})


async def run_churn_daily(ctx: AppContext, stop: asyncio.Event) -> None:
    """Periodic job: once per (Shanghai) day, recompute the scores and notify marketers."""
    interval = float(ctx.extras.get("churn_check_interval", CHECK_EVERY))
    while not stop.is_set():
        try:
            today = utcnow().astimezone(SHANGHAI).date().isoformat()
            async with ctx.db.session() as s:
                row = await s.get(DeskSetting, RUN_KEY)
                due = row is None or (row.value or {}).get("date") != today
            if due:  # the job's lease makes this process the only one running it
                await recompute(ctx)
                async with unit_of_work(ctx) as tx:
                    row = await tx.session.get(DeskSetting, RUN_KEY)
                    if row is None:
                        tx.session.add(DeskSetting(key=RUN_KEY, value={"date": today}))
                    else:
                        row.value = {"date": today}
        except Exception:
            log.exception("churn scoring failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
