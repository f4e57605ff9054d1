"""Reading tickets for the desk: the filtered list (newest first, keyset paging) and a ticket's SLA
clocks in business time (from its conversation's SLA clock).

The list stays a bounded walk at 100k tickets (migration 0020 has the measurements):
* status and priority values are written into the SQL (they come from fixed lists), so the partial
  "active" indexes match the query on both backends, whichever plan runs;
* on PostgreSQL a text search is planned for its own term (`plan_cache_mode`): the cached generic plan
  cannot see the term and walked every ticket for rare ones (240 ms p50 at 100k tickets);
* the page's ids are chosen first and only then joined to their rows, so "my active tickets" is an
  index-only scan of a partial index: the plan that walked every ticket by id found none for an agent
  with no active ticket only after the last one (30-156 ms);
* subject search uses the trigram indexes; a term with CJK characters goes through the spaced-out
  expression index as well (pg_trgm needs three characters in a word, "发票" has two).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, bindparam, cast, func, literal_column, or_, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models import Agent, Contact, Ticket, utcnow
from scrm.db.models_desk import ConversationStats, SlaPolicy, Team
from scrm.services.conversations.search import like_pattern, spaced
from scrm.services.desk import sla
from scrm.services.desk.business_time import business_seconds
from scrm.services.desk.settings import business_hours

STATUSES = ("new", "open", "pending", "solved", "closed")
STATUS_GROUPS = {"active": ("new", "open", "pending"), "done": ("solved", "closed")}
PRIORITIES = ("low", "normal", "high", "urgent")
DUE_SOON = timedelta(hours=2)
_NUMBER = re.compile(r"^#?(\d{1,12})$")
_NON_ASCII = re.compile(r"[^\x01-\x7f]")
TEXT_CAP = 500  # subject matches a search sorts itself; beyond that the term is common and the list walks
# Must match migration 0020's ix_tickets_subject_spaced character for character (the planner matches text).
SPACED_SUBJECT = r"regexp_replace(tickets.subject, '([^\x01-\x7f])', ' \1 ', 'g')"
SPACED_INDEX = "ix_tickets_subject_spaced"
_has_spaced: dict[str, bool] = {}  # database url -> the spaced index exists (pg_trgm may be missing)


class FilterError(ValueError):
    """A filter value the list cannot use (the message names it)."""


@dataclass
class TicketFilter:
    status: str | None = None  # comma list, or active / done
    priority: str | None = None  # comma list
    assignee: str | None = None  # me | none | agent id
    team_id: int | None = None
    sla: str | None = None  # breached | due_soon
    q: str | None = None
    contact_id: int | None = None
    conversation_id: int | None = None


def _in(column: Any, raw: str, allowed: tuple[str, ...], name: str, groups: dict[str, tuple[str, ...]]) -> Any:
    values: list[str] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        if part in groups:
            values += groups[part]
        elif part in allowed:
            values.append(part)
        else:
            raise FilterError(f"{name} must be one of {', '.join((*allowed, *groups))}")
    if not values:
        return None
    # Literal values (checked against `allowed` above): a partial index's predicate can then be proven from
    # the query text itself, on SQLite and in any PostgreSQL plan.
    return column.in_(bindparam(f"{name}_values", values, expanding=True, literal_execute=True))


def conditions(f: TicketFilter, me: int, now: datetime | None = None,
               spaced_search: bool = False) -> tuple[list[Any], bool]:
    """SQL conditions for a filter, and whether they need the SLA stats join. `spaced_search`: PostgreSQL
    with migration 0020's spaced subject index, which a term with non-ASCII characters then goes through."""
    conds: list[Any] = [Ticket.merged_into_id.is_(None)]
    if f.status:
        cond = _in(Ticket.status, f.status, STATUSES, "status", STATUS_GROUPS)
        if cond is not None:
            conds.append(cond)
    if f.priority:
        cond = _in(Ticket.priority, f.priority, PRIORITIES, "priority", {})
        if cond is not None:
            conds.append(cond)
    if f.assignee:
        if f.assignee == "me":
            conds.append(Ticket.assignee_id == me)
        elif f.assignee == "none":
            conds.append(Ticket.assignee_id.is_(None))
        elif f.assignee.isdigit():
            conds.append(Ticket.assignee_id == int(f.assignee))
        else:
            raise FilterError("assignee must be me, none or an agent id")
    if f.team_id is not None:
        conds.append(Ticket.team_id == f.team_id)
    if f.contact_id is not None:
        conds.append(Ticket.contact_id == f.contact_id)
    if f.conversation_id is not None:
        conds.append(Ticket.conversation_id == f.conversation_id)
    if f.q and f.q.strip():
        conds.append(text_match(f.q.strip(), spaced_search))
    joined = False
    if f.sla:
        now = now or utcnow()
        joined = True
        open_clock = ConversationStats.resolved_at.is_(None)
        if f.sla == "breached":
            conds += [open_clock, cast(ConversationStats.breached, String) != "[]"]
        elif f.sla == "due_soon":
            soon = now + DUE_SOON
            conds += [open_clock, or_(
                (ConversationStats.first_response_at.is_(None)) & (ConversationStats.first_response_due <= soon),
                ConversationStats.next_response_due <= soon, ConversationStats.resolution_due <= soon)]
        else:
            raise FilterError("sla must be breached or due_soon")
    return conds, joined


def text_match(term: str, spaced_search: bool = False) -> Any:
    """The condition for a search term: its ticket number ("#1042", or digits alone), or subject text."""
    number = _NUMBER.match(term)
    if number and term.startswith("#"):
        return Ticket.number == int(number.group(1))  # "#1042" is a ticket number: one index lookup
    text_cond: ColumnElement[bool] = Ticket.subject.ilike(like_pattern(term), escape="\\")
    if spaced_search and _NON_ASCII.search(term):
        # The index finds spaced(subject) containing spaced(term); the plain ILIKE stays as the exact check
        # (spacing can make "订 " look like a part of "订订").
        text_cond = literal_column(SPACED_SUBJECT).ilike(like_pattern(spaced(term)), escape="\\") & text_cond
    return or_(text_cond, Ticket.number == int(number.group(1))) if number else text_cond


async def list_tickets(session: AsyncSession, f: TicketFilter, me: int, *, before_id: int | None = None,
                       limit: int = 25, visible: Sequence[Any] = ()) -> tuple[list[dict[str, Any]], int | None]:
    """A page of tickets (with contact, assignee, team names and SLA state) and the next page's cursor.

    `visible`: extra conditions limiting the rows to the caller's inboxes (inbox_access.ticket_filter)."""
    term = (f.q or "").strip()
    postgres = (await session.connection()).dialect.name == "postgresql"
    by_text = bool(term) and not (term.startswith("#") and _NUMBER.match(term))  # "#1042": one index lookup
    spaced_search = False
    if by_text and postgres:
        # Plan for this term, not a cached generic plan (see the module's docstring); this transaction only.
        # The other filters' plans do not depend much on their values (literal statuses, index-only pages),
        # so they skip this round trip.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        spaced_search = await _spaced_index(session)
    conds, joined = conditions(replace(f, q=None), me)
    conds += visible
    if before_id:
        conds.append(Ticket.id < before_id)
    # The page's ids first, then their rows and names: a query of ids alone can be answered from an index
    # (the partial "active" ones of migration 0020) without visiting the tickets it skips.
    ids = select(Ticket.id)
    if joined:
        ids = ids.join(ConversationStats, ConversationStats.conversation_id == Ticket.conversation_id)
    ids = ids.where(*conds)
    match = text_match(term, spaced_search) if term else None
    found = await _rare_matches(session, conds, joined, match, limit) if by_text and postgres else None
    if found is not None:
        page_cond = Ticket.id.in_(found)
    else:
        page_ids = (ids.where(match) if match is not None else ids).order_by(Ticket.id.desc()).limit(limit + 1)
        page_cond = Ticket.id.in_(page_ids.scalar_subquery())
    stmt = (select(Ticket, Contact.name, Agent.display_name, Team.name).where(page_cond)
            .outerjoin(Contact, Contact.id == Ticket.contact_id)
            .outerjoin(Agent, Agent.id == Ticket.assignee_id)
            .outerjoin(Team, Team.id == Ticket.team_id))
    rows = (await session.execute(stmt.order_by(Ticket.id.desc()))).all()
    page = rows[:limit]
    conv_ids = [r[0].conversation_id for r in page if r[0].conversation_id]
    stats = {s.conversation_id: s for s in (await session.scalars(
        select(ConversationStats).where(ConversationStats.conversation_id.in_(conv_ids)))).all()} if conv_ids else {}
    items = []
    for ticket, contact, assignee, team in page:
        items.append({**ticket_row(ticket), "contact_name": contact, "assignee_name": assignee, "team_name": team,
                      "sla": sla.status_of(stats.get(ticket.conversation_id or 0))})
    return items, (page[-1][0].id if len(rows) > limit else None)


async def _rare_matches(session: AsyncSession, conds: list[Any], joined: bool, match: Any,
                        limit: int) -> list[int] | None:
    """The page's ids when the term matches at most TEXT_CAP tickets (read through the trigram indexes and
    sorted), None when it matches more (the caller then walks the list by id, which finds a common term's
    page at once).

    Left to itself the planner picks between those two from its estimate of the term's share, and a rare
    term that happens to sit in the subject histogram looks a hundred times more common than it is: the walk
    it then chose read every ticket ("order 4321", 11 matches: 350 ms at 100k tickets)."""
    hits = select(Ticket.id).where(match).limit(TEXT_CAP + 1).cte("hits").prefix_with("MATERIALIZED")
    count = select(func.count()).select_from(hits).scalar_subquery()
    # Sorted by the matches' own ids, so no plan can walk the whole list by id looking for them; and only
    # when they are few (the count gates the page: a common term's page is not worked out twice).
    page: Any = select(hits.c.id).join(Ticket, Ticket.id == hits.c.id)  # a Select, then its subquery
    if joined:
        page = page.join(ConversationStats, ConversationStats.conversation_id == Ticket.conversation_id)
    page = page.where(*conds, count <= TEXT_CAP).order_by(hits.c.id.desc()).limit(limit + 1).subquery("p")
    counted = select(count.label("n")).subquery("c")
    rows = (await session.execute(select(counted.c.n, page.c.id).select_from(counted).outerjoin(page, true())
                                  .order_by(page.c.id.desc()))).all()
    if rows[0].n > TEXT_CAP:
        return None
    return [r.id for r in rows if r.id is not None]


async def _spaced_index(session: AsyncSession) -> bool:
    """Whether migration 0020 could create the spaced subject index here (cached per database)."""
    key = str((await session.connection()).engine.url)
    if key not in _has_spaced:
        _has_spaced[key] = bool(await session.scalar(text(
            "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = :name"),
            {"name": SPACED_INDEX}))
    return _has_spaced[key]


def ticket_row(t: Ticket) -> dict[str, Any]:
    """The ticket's own columns as JSON."""
    return {"id": t.id, "number": t.number, "display_number": f"#{t.number}", "subject": t.subject,
            "description": t.description, "status": t.status, "priority": t.priority,
            "conversation_id": t.conversation_id, "contact_id": t.contact_id, "assignee_id": t.assignee_id,
            "team_id": t.team_id, "merged_into_id": t.merged_into_id, "fields": t.fields or {},
            "created_at": t.created_at.isoformat() if t.created_at else None,
            "updated_at": t.updated_at.isoformat() if t.updated_at else None}


async def sla_clocks(session: AsyncSession, conversation_id: int | None, now: datetime | None = None) -> dict[str, Any]:
    """The SLA clocks of a ticket's conversation: each target's due time and the business minutes left
    (negative once overdue), counted in the desk's business hours unless the policy runs 24x7."""
    empty: dict[str, Any] = {"policy": None, "state": "none", "clocks": []}
    if conversation_id is None:
        return empty
    stats = await session.get(ConversationStats, conversation_id)
    if stats is None or stats.policy_id is None:
        return empty
    policy = await session.get(SlaPolicy, stats.policy_id)
    hours = await business_hours(session) if policy is None or policy.business_hours else None
    now = now or utcnow()
    done = {"first_response": stats.first_response_at, "resolution": stats.resolved_at}
    clocks = []
    for kind, due in (("first_response", stats.first_response_due), ("next_response", stats.next_response_due),
                      ("resolution", stats.resolution_due)):
        if due is None:
            continue
        finished = done.get(kind)
        if finished is not None:
            left = None
        elif due >= now:
            left = business_seconds(hours, now, due) / 60
        else:
            left = -business_seconds(hours, due, now) / 60
        clocks.append({"kind": kind, "due_at": due.isoformat(), "done_at": finished.isoformat() if finished else None,
                       "business_minutes_left": round(left, 1) if left is not None else None,
                       "breached": kind in (stats.breached or []), "warned": kind in (stats.warned or [])})
    return {"policy": {"id": policy.id, "name": policy.name, "business_hours": policy.business_hours} if policy else None,
            "state": sla.status_of(stats, now)["state"], "clocks": clocks, "business_hours": hours is not None}
