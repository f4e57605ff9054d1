"""Desk reports for a date range, grouped by inbox, channel, team or agent: SQL aggregates only.

Durations come from desk_conversation_stats (business seconds, computed when the event happened), so
a report is a handful of GROUP BY queries whatever the range. Percentiles are nearest-rank (the value
at rank ceil(p*n)): percentile_disc on PostgreSQL, the same rank picked with window functions on SQLite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Float, and_, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from scrm.db.models import Agent, Conversation, Inbox, Message
from scrm.db.models_desk import ConversationStats, CsatSurvey, FaqOutcome, Team

GroupBy = Literal["none", "inbox", "channel", "team", "agent"]
GROUPS: tuple[str, ...] = ("none", "inbox", "channel", "team", "agent")
# The inboxes the reader may see (a SELECT of ids), or None for all. A context variable rather than a
# parameter: every section builds its queries through _source(), which applies it in one place.
_INBOX_SCOPE: ContextVar[Any | None] = ContextVar("report_inbox_scope", default=None)


@contextlib.contextmanager
def inbox_scope(ids: Any | None) -> Iterator[None]:
    """Within the block, every report figure counts only conversations of these inboxes (None: all)."""
    token = _INBOX_SCOPE.set(ids)
    try:
        yield
    finally:
        _INBOX_SCOPE.reset(token)


def _scoped(col: Any) -> list[Any]:
    ids = _INBOX_SCOPE.get()
    return [] if ids is None else [col.in_(ids)]


REPORTS = ("volume", "messages", "response_times", "deflection", "faq", "sla", "csat", "timeseries")


def _source(group: str, source: str) -> tuple[ColumnElement[Any], Any]:
    """The grouping column for a source table and a function adding the joins it needs."""
    conv_on = {"msg": Conversation.id == Message.conversation_id,
               "stats": Conversation.id == ConversationStats.conversation_id,
               "faq": Conversation.id == FaqOutcome.conversation_id}
    inbox_col = {"conv": Conversation.inbox_id, "msg": Message.inbox_id, "stats": ConversationStats.inbox_id,
                 "csat": CsatSurvey.inbox_id, "faq": FaqOutcome.inbox_id}[source]

    def joins(q: Any) -> Any:
        q = q.where(*_scoped(inbox_col))
        if group == "channel":
            q = q.join(Inbox, Inbox.id == inbox_col)
        if group in ("agent", "team") and source in conv_on and not (group == "team" and source == "stats"):
            q = q.join(Conversation, conv_on[source])
        if group == "team" and source in ("conv", "msg", "faq"):
            q = q.outerjoin(ConversationStats, ConversationStats.conversation_id == Conversation.id)
        return q

    if group == "inbox":
        col: Any = inbox_col
    elif group == "channel":
        col = Inbox.channel_type
    elif group == "agent":
        col = CsatSurvey.agent_id if source == "csat" else Conversation.assignee_id
    elif group == "team":
        col = CsatSurvey.team_id if source == "csat" else ConversationStats.team_id
    else:
        col = literal("all")
    return col.label("g"), joins


def _in(col: Any, start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(col >= start, col < end)


async def volume(s: AsyncSession, start: datetime, end: datetime, group: str) -> dict[Any, dict[str, Any]]:
    """Conversations opened and resolved in the range."""
    out: dict[Any, dict[str, Any]] = {}
    g, joins = _source(group, "conv")
    for name, col in (("opened", Conversation.created_at), ("resolved", Conversation.resolved_at)):
        q = joins(select(g, func.count()).select_from(Conversation)).where(_in(col, start, end))
        if name == "resolved":
            q = q.where(Conversation.status == "resolved")
        for key, n in (await s.execute(q.group_by(g))).all():
            out.setdefault(key, {})[name] = n
    return out


async def messages(s: AsyncSession, start: datetime, end: datetime, group: str) -> dict[Any, dict[str, Any]]:
    """Messages in (from customers) and out (agents and bot; notes and system events excluded)."""
    visible = and_(_in(Message.created_at, start, end), Message.private.is_(False), Message.sender_kind != "system")
    g, joins = _source(group, "msg")
    base = joins(select(g, Message.direction, func.count()).select_from(Message))
    out: dict[Any, dict[str, Any]] = {}
    for key, direction, n in (await s.execute(base.where(visible).group_by(g, Message.direction))).all():
        out.setdefault(key, {})["messages_" + direction] = n
    return out


async def _percentiles(s: AsyncSession, value: Any, g: ColumnElement[Any], where: Sequence[Any], joins: Any,
                       prefix: str) -> dict[Any, dict[str, Any]]:
    dialect = s.bind.dialect.name if s.bind else "sqlite"
    out: dict[Any, dict[str, Any]] = {}
    if dialect == "postgresql":
        q = select(g, func.count(value), func.avg(value),
                   func.percentile_disc(0.5).within_group(value), func.percentile_disc(0.9).within_group(value))
        q = joins(q.select_from(ConversationStats)).where(*where, value.is_not(None)).group_by(g)
        for key, n, avg, p50, p90 in (await s.execute(q)).all():
            out[key] = {f"{prefix}_count": n, f"{prefix}_avg": _r(avg), f"{prefix}_median": _r(p50), f"{prefix}_p90": _r(p90)}
        return out
    ranked = joins(select(
        g, value.label("v"),
        func.row_number().over(partition_by=g, order_by=value).label("rn"),
        func.count().over(partition_by=g).label("n"),
    ).select_from(ConversationStats)).where(*where, value.is_not(None)).subquery()
    # Nearest rank: ceil(p*n) in integers, (n+1)/2 and (9n+9)/10.
    q = select(ranked.c.g, func.max(ranked.c.n), func.avg(ranked.c.v),
               func.max(case((ranked.c.rn == (ranked.c.n + 1) // 2, ranked.c.v))),
               func.max(case((ranked.c.rn == (ranked.c.n * 9 + 9) // 10, ranked.c.v)))).group_by(ranked.c.g)
    for key, n, avg, p50, p90 in (await s.execute(q)).all():
        out[key] = {f"{prefix}_count": n, f"{prefix}_avg": _r(avg), f"{prefix}_median": _r(p50), f"{prefix}_p90": _r(p90)}
    return out


def _r(x: Any) -> float | None:
    return None if x is None else round(float(x), 1)


async def response_times(s: AsyncSession, start: datetime, end: datetime, group: str) -> dict[Any, dict[str, Any]]:
    """First response time (first human answer in range) and resolution time (resolved in range),
    in business seconds: count, average, median, p90."""
    g, joins = _source(group, "stats")
    frt = await _percentiles(s, ConversationStats.first_response_secs, g,
                             [_in(ConversationStats.first_response_at, start, end)], joins, "first_response")
    res = await _percentiles(s, ConversationStats.resolution_secs, g,
                             [_in(ConversationStats.resolved_at, start, end)], joins, "resolution")
    out: dict[Any, dict[str, Any]] = {}
    for part in (frt, res):
        for key, row in part.items():
            out.setdefault(key, {}).update(row)
    return out


async def deflection(s: AsyncSession, start: datetime, end: datetime, group: str) -> dict[Any, dict[str, Any]]:
    """Of the conversations resolved in range: how many without any human (bot deflection),
    and handoffs to humans among the conversations opened in range."""
    g, joins = _source(group, "conv")
    bot_only = and_(func.coalesce(ConversationStats.human_involved, False).is_(False), Conversation.assignee_id.is_(None))
    q = joins(select(g, func.count(), func.sum(case((bot_only, 1), else_=0))).select_from(Conversation))
    if group != "team":  # the team grouping already joined the stats
        q = q.outerjoin(ConversationStats, ConversationStats.conversation_id == Conversation.id)
    q = (q.where(_in(Conversation.resolved_at, start, end), Conversation.status == "resolved").group_by(g))
    out: dict[Any, dict[str, Any]] = {}
    for key, resolved, by_bot in (await s.execute(q)).all():
        by_bot = int(by_bot or 0)
        out[key] = {"resolved_total": resolved, "resolved_by_bot": by_bot,
                    "deflection_rate": round(by_bot / resolved, 4) if resolved else None}
    g2, joins2 = _source(group, "stats")
    q2 = (joins2(select(g2, func.coalesce(func.sum(ConversationStats.handoffs), 0),
                        func.sum(case((ConversationStats.handoffs > 0, 1), else_=0))).select_from(ConversationStats))
          .where(_in(ConversationStats.created_at, start, end)).group_by(g2))
    for key, handoffs, handed in (await s.execute(q2)).all():
        out.setdefault(key, {}).update({"handoffs": int(handoffs or 0), "conversations_handed_off": int(handed or 0)})
    return out


async def faq(s: AsyncSession, start: datetime, end: datetime, group: str) -> dict[Any, dict[str, Any]]:
    """FAQ answer rate: questions the bot looked up in the FAQ (answered, clarified or not found) and
    how many of them got an answer (directly, or a candidate the customer picked after a clarify)."""
    g, joins = _source(group, "faq")

    def n(*outcomes: str) -> Any:
        return func.sum(case((FaqOutcome.outcome.in_(outcomes), 1), else_=0))

    q = (joins(select(g, n("answer", "clarify", "reject"), n("answer", "picked"), n("answer"), n("clarify"),
                      n("reject", "none")).select_from(FaqOutcome))
         .where(_in(FaqOutcome.created_at, start, end)).group_by(g))
    out: dict[Any, dict[str, Any]] = {}
    for key, asked, answered, direct, clarified, unanswered in (await s.execute(q)).all():
        asked, answered = int(asked or 0), int(answered or 0)
        out[key] = {"faq_questions": asked, "faq_answered": answered, "faq_answered_directly": int(direct or 0),
                    "faq_clarified": int(clarified or 0), "faq_not_found": int(unanswered or 0),
                    # A pick can land in the range after its clarify did not: never above 100 %.
                    "faq_answer_rate": round(min(answered, asked) / asked, 4) if asked else None}
    return out


async def faq_top(s: AsyncSession, start: datetime, end: datetime, limit: int = 10) -> list[dict[str, Any]]:
    """The FAQ entries the bot answered most in the range, with their question and mean confidence."""
    from scrm.db.models import FaqEntryRow

    count = func.count().label("n")
    q = (select(FaqOutcome.entry_key, count, func.avg(FaqOutcome.confidence))
         .where(_in(FaqOutcome.created_at, start, end), FaqOutcome.outcome.in_(("answer", "picked")),
                FaqOutcome.entry_key.is_not(None), *_scoped(FaqOutcome.inbox_id))
         .group_by(FaqOutcome.entry_key).order_by(count.desc(), FaqOutcome.entry_key).limit(limit))
    rows = (await s.execute(q)).all()
    keys = [k for k, _, _ in rows]
    questions = dict((await s.execute(select(FaqEntryRow.key, FaqEntryRow.question)
                                      .where(FaqEntryRow.key.in_(keys)))).all()) if keys else {}
    return [{"entry": k, "question": questions.get(k, k), "count": int(cnt),
             "confidence": round(float(conf), 3) if conf is not None else None} for k, cnt, conf in rows]


async def sla(s: AsyncSession, start: datetime, end: datetime, group: str) -> dict[Any, dict[str, Any]]:
    """SLA compliance of the conversations resolved in range under a policy."""
    g, joins = _source(group, "stats")
    q = joins(select(g, func.count(), func.sum(case((ConversationStats.sla_met.is_(True), 1), else_=0)))
              .select_from(ConversationStats))
    q = q.where(_in(ConversationStats.resolved_at, start, end), ConversationStats.sla_met.is_not(None)).group_by(g)
    out: dict[Any, dict[str, Any]] = {}
    for key, total, met in (await s.execute(q)).all():
        met = int(met or 0)
        out[key] = {"sla_total": total, "sla_met": met, "sla_compliance": round(met / total, 4) if total else None}
    return out


async def csat(s: AsyncSession, start: datetime, end: datetime, group: str) -> dict[Any, dict[str, Any]]:
    """CSAT answers in range: count, average and the 1..5 distribution (per the rated agent/team/inbox)."""
    g, joins = _source(group, "csat")
    cols = [func.sum(case((CsatSurvey.rating == n, 1), else_=0)) for n in range(1, 6)]
    q = (joins(select(g, func.count(), func.avg(cast(CsatSurvey.rating, Float)), *cols).select_from(CsatSurvey))
         .where(CsatSurvey.status == "answered", _in(CsatSurvey.answered_at, start, end)).group_by(g))
    asked_q = joins(select(g, func.count()).select_from(CsatSurvey)).where(_in(CsatSurvey.asked_at, start, end)).group_by(g)
    out: dict[Any, dict[str, Any]] = {}
    for key, n in (await s.execute(asked_q)).all():
        out[key] = {"csat_asked": n}
    for key, n, avg, *dist in (await s.execute(q)).all():
        out.setdefault(key, {}).update({"csat_answers": n, "csat_average": round(float(avg), 2) if avg is not None else None,
                                        **{f"csat_{i}": int(d or 0) for i, d in enumerate(dist, start=1)}})
    return out


def _day_expr(col: Any, dialect: str, offset_hours: float, tz: str) -> Any:
    if dialect == "postgresql":
        # Group on the truncated local timestamp; formatting happens on the few grouped rows.
        return func.date_trunc("day", func.timezone(tz, col))
    return func.strftime("%Y-%m-%d", col, f"{offset_hours:+g} hours")


def _day_key(value: Any) -> str:
    return value if isinstance(value, str) else value.date().isoformat()


async def timeseries(s: AsyncSession, start: datetime, end: datetime, tz: str = "Asia/Shanghai") -> list[dict[str, Any]]:
    """Per local day: conversations opened and resolved, messages in and out (for the line chart)."""
    dialect = s.bind.dialect.name if s.bind else "sqlite"
    offset = (start.astimezone(ZoneInfo(tz)).utcoffset() or timedelta(0)).total_seconds() / 3600
    zone = ZoneInfo(tz)
    days: dict[str, dict[str, int]] = {}
    cur = start.astimezone(zone).date()
    while datetime.combine(cur, datetime.min.time(), tzinfo=zone) < end and len(days) < 800:
        days[cur.isoformat()] = {"opened": 0, "resolved": 0, "messages_in": 0, "messages_out": 0}
        cur += timedelta(days=1)
    for name, col, extra in (("opened", Conversation.created_at, None),
                             ("resolved", Conversation.resolved_at, Conversation.status == "resolved")):
        d = _day_expr(col, dialect, offset, tz).label("d")
        q = select(d, func.count()).where(_in(col, start, end), *_scoped(Conversation.inbox_id))
        if extra is not None:
            q = q.where(extra)
        for day, n in (await s.execute(q.group_by(d))).all():
            day = _day_key(day)
            days.setdefault(day, {"opened": 0, "resolved": 0, "messages_in": 0, "messages_out": 0})[name] = n
    d = _day_expr(Message.created_at, dialect, offset, tz).label("d")
    q = (select(d, Message.direction, func.count())
         .where(_in(Message.created_at, start, end), Message.private.is_(False), Message.sender_kind != "system",
                *_scoped(Message.inbox_id))
         .group_by(d, Message.direction))
    for day, direction, n in (await s.execute(q)).all():
        day = _day_key(day)
        days.setdefault(day, {"opened": 0, "resolved": 0, "messages_in": 0, "messages_out": 0})["messages_" + direction] = n
    return [{"day": k, **v} for k, v in sorted(days.items())]


SECTIONS = {"volume": volume, "messages": messages, "response_times": response_times, "deflection": deflection,
            "faq": faq, "sla": sla, "csat": csat}


async def _labels(s: AsyncSession, group: str, keys: Sequence[Any]) -> dict[Any, str]:
    ids = [k for k in keys if isinstance(k, int)]
    if group == "inbox" and ids:
        return {i: n for i, n in (await s.execute(select(Inbox.id, Inbox.name).where(Inbox.id.in_(ids)))).all()}
    if group == "agent" and ids:
        return {i: n for i, n in (await s.execute(select(Agent.id, Agent.display_name).where(Agent.id.in_(ids)))).all()}
    if group == "team" and ids:
        return {i: n for i, n in (await s.execute(select(Team.id, Team.name).where(Team.id.in_(ids)))).all()}
    return {}


async def build(s: AsyncSession, start: datetime, end: datetime, group: str = "none",
                sections: Sequence[str] = tuple(SECTIONS)) -> dict[str, Any]:
    """The full report: one row per group with every figure, plus totals where they add up."""
    if group not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    if end <= start:
        raise ValueError("the end of the range must be after its start")
    merged: dict[Any, dict[str, Any]] = {}
    for name in sections:
        for key, row in (await SECTIONS[name](s, start, end, group)).items():
            merged.setdefault(key, {}).update(row)
    labels = await _labels(s, group, list(merged))
    rows = []
    for key in sorted(merged, key=lambda k: (k is None, str(k))):
        label = labels.get(key, "(none)" if key is None else str(key))
        rows.append({"key": key, "label": label, **merged[key]})
    return {"from": start.isoformat(), "to": end.isoformat(), "group_by": group, "rows": rows}


CSV_COLUMNS = ("key", "label", "opened", "resolved", "messages_in", "messages_out",
               "first_response_count", "first_response_median", "first_response_p90",
               "resolution_count", "resolution_median", "resolution_p90",
               "resolved_total", "resolved_by_bot", "deflection_rate", "handoffs", "conversations_handed_off",
               "faq_questions", "faq_answered", "faq_answer_rate",
               "sla_total", "sla_met", "sla_compliance",
               "csat_asked", "csat_answers", "csat_average", "csat_1", "csat_2", "csat_3", "csat_4", "csat_5")


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] = CSV_COLUMNS) -> str:
    """CSV text (UTF-8 with BOM added by the caller for Excel) of report rows."""
    import csv
    import io

    from scrm.domain import safe_cell

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    for row in rows:
        w.writerow({c: ("" if row.get(c) is None else safe_cell(row.get(c))) for c in columns})
    return buf.getvalue()


async def unanswered_top(s: AsyncSession, start: datetime, end: datetime, limit: int = 10,
                         scan: int = 2000) -> list[dict[str, Any]]:
    """The biggest groups of questions the bot could not answer in the range (newest `scan` looked at)."""
    from bot_flows.matcher import group_similar
    from scrm.db.models import UnansweredQuestion

    texts = list((await s.scalars(
        select(UnansweredQuestion.text).where(_in(UnansweredQuestion.created_at, start, end), *(
            [UnansweredQuestion.conversation_id.in_(select(Conversation.id).where(*conv))]
            if (conv := _scoped(Conversation.inbox_id)) else []))
        .order_by(UnansweredQuestion.id.desc()).limit(scan)
    )).all())
    groups = sorted(group_similar(texts), key=lambda g: (-len(g), g[0])) if texts else []
    return [{"count": len(g), "example": texts[g[0]], "texts": [texts[i] for i in g[:5]]} for g in groups[:limit]]


async def broadcast_summaries(s: AsyncSession, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per broadcast started in the range: targeted, skipped, sent, delivered, failed, replied, opted out."""
    from scrm.db.models import Delivery
    from scrm.db.models_marketing import Broadcast
    from scrm.db.models_marketing import BroadcastRecipient as R

    def count_if(cond: Any) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    rows = (await s.execute(
        select(
            Broadcast.id, Broadcast.name, Broadcast.status, Broadcast.started_at,
            func.count(R.id),
            count_if(R.status == "skipped"),
            count_if(Delivery.status.in_(("sent", "delivered"))),
            count_if(Delivery.status == "delivered"),
            count_if(Delivery.status == "failed"),
            count_if(R.replied_at.is_not(None)),
            count_if(R.opted_out_at.is_not(None)),
        )
        .join(R, R.broadcast_id == Broadcast.id)
        .outerjoin(Delivery, Delivery.id == R.delivery_id)
        .where(_in(Broadcast.started_at, start, end))
        .group_by(Broadcast.id, Broadcast.name, Broadcast.status, Broadcast.started_at)
        .order_by(Broadcast.started_at)
    )).all()
    keys = ("id", "name", "status", "started_at", "targeted", "skipped", "sent", "delivered", "failed", "replied",
            "opted_out")
    out = []
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        item["started_at"] = item["started_at"].isoformat() if item["started_at"] else None
        out.append(item)
    return out
