"""Which inboxes an agent may see, as SQL the list queries embed (one subquery, never per-row checks).

Rules (README "Inbox membership"):
- admins see every inbox;
- an inbox with no member rows (no agent, no team) is open to every agent — the behaviour before
  membership existed, so a fresh install and the demo keep working until an admin assigns members;
- otherwise an agent sees it when listed in inbox_agents or a member of a team listed in inbox_teams.
Conversations, messages, tickets, files, realtime events and reports follow their conversation's inbox.
Contacts: an agent sees a contact with an identity in a visible inbox, or with no identity at all (a
contact imported or typed in belongs to no inbox). Marketers see every contact (segments and
broadcasts need them) but a contact's conversation history only from open inboxes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from scrm.db.models import Agent, Contact, ContactIdentity, Conversation, Inbox, Ticket
from scrm.db.models_access import InboxAgent, InboxTeam
from scrm.db.models_desk import TeamMember
from scrm.services.agents.accounts import Principal

NOT_FOUND = "not_found"  # an invisible row answers exactly like a missing one (no existence oracle)


def _open_inbox() -> Any:
    return and_(~exists().where(InboxAgent.inbox_id == Inbox.id), ~exists().where(InboxTeam.inbox_id == Inbox.id))


def visible_inbox_ids(agent_id: int | Any) -> Select[int]:
    """SELECT of the inbox ids `agent_id` may see as a non-admin (embed with .in_()); `agent_id` may be a
    column (Agent.id) for a correlated check."""
    # correlate_except: with agent_id = Agent.id the agents row comes from the outermost query.
    member = exists().where(InboxAgent.inbox_id == Inbox.id, InboxAgent.agent_id == agent_id
                            ).correlate_except(InboxAgent)
    via_team = exists().where(InboxTeam.inbox_id == Inbox.id, TeamMember.team_id == InboxTeam.team_id,
                              TeamMember.agent_id == agent_id).correlate_except(InboxTeam, TeamMember)
    return select(Inbox.id).where(or_(_open_inbox(), member, via_team))


def sees_inbox(inbox_id: int) -> Any:
    """A condition on Agent rows: may see the inbox (assignment and @mentions never reach anyone else)."""
    return or_(Agent.role == "admin", exists(visible_inbox_ids(Agent.id).where(Inbox.id == inbox_id)))


def scope(principal: Principal | None) -> Select[int] | None:
    """The visible inbox ids of the caller, or None when the caller sees everything (admins)."""
    if principal is None or principal.role == "admin":
        return None
    return visible_inbox_ids(principal.agent_id)


def conversation_filter(principal: Principal | None) -> list[Any]:
    """WHERE conditions limiting Conversation rows to the caller's inboxes (empty for admins)."""
    ids = scope(principal)
    return [] if ids is None else [Conversation.inbox_id.in_(ids)]


def contact_filter(principal: Principal | None) -> list[Any]:
    """WHERE conditions limiting Contact rows for an agent (marketers and admins see every contact)."""
    if principal is None or principal.role != "agent":
        return []
    return [_contact_visible(Contact.id, visible_inbox_ids(principal.agent_id))]


def _contact_visible(contact_id: Any, ids: Select[int]) -> Any:
    """The contact has an identity in a visible inbox, or none at all. Scalar subqueries with LIMIT 1 are index
    probes per listed row; EXISTS inside OR would make PostgreSQL hash every identity on each request."""
    def first(*conds: Any) -> Any:
        return select(ContactIdentity.id).where(ContactIdentity.contact_id == contact_id, *conds).limit(1).scalar_subquery()

    return or_(first(ContactIdentity.inbox_id.in_(ids)).is_not(None), first().is_(None))


def ticket_filter(principal: Principal | None) -> list[Any]:
    """WHERE conditions on Ticket: its conversation's inbox, or (no conversation) its contact's inboxes."""
    ids = scope(principal)
    if ids is None:
        return []
    # A scalar subquery: one primary-key probe per listed ticket. (EXISTS or IN here become a hash of every
    # visible conversation, built for each list request: it grows with the conversation table.)
    conv_inbox = select(Conversation.inbox_id).where(Conversation.id == Ticket.conversation_id).scalar_subquery()
    via_conv = conv_inbox.in_(ids)
    no_conv = and_(Ticket.conversation_id.is_(None), _contact_visible(Ticket.contact_id, ids))
    return [or_(via_conv, no_conv)]


async def can_see_inbox(s: AsyncSession, principal: Principal | None, inbox_id: int) -> bool:
    ids = scope(principal)
    return ids is None or bool(await s.scalar(select(exists().where(Inbox.id == inbox_id, Inbox.id.in_(ids)))))


async def agent_sees_inbox(s: AsyncSession, agent_id: int, role: str, inbox_id: int) -> bool:
    """Whether an agent (by id and role) may see an inbox: assignment checks its assignee with this."""
    if role == "admin":
        return True
    return bool(await s.scalar(select(exists().where(Inbox.id == inbox_id,
                                                     Inbox.id.in_(visible_inbox_ids(agent_id))))))


async def can_see_conversation(s: AsyncSession, principal: Principal | None, conversation_id: int) -> bool:
    ids = scope(principal)
    if ids is None:
        return True
    return bool(await s.scalar(select(exists().where(Conversation.id == conversation_id,
                                                     Conversation.inbox_id.in_(ids)))))


async def can_see_contact(s: AsyncSession, principal: Principal | None, contact_id: int) -> bool:
    conds = contact_filter(principal)
    if not conds:
        return True
    return bool(await s.scalar(select(exists().where(Contact.id == contact_id, *conds))))


async def can_see_ticket(s: AsyncSession, principal: Principal | None, ticket_id: int) -> bool:
    conds = ticket_filter(principal)
    if not conds:
        return True
    return bool(await s.scalar(select(exists().where(Ticket.id == ticket_id, *conds))))


async def visible_inbox_set(s: AsyncSession, agent_id: int, role: str) -> frozenset[int] | None:
    """The ids as a set (realtime filtering in Python per socket); None for admins (everything)."""
    if role == "admin":
        return None
    return frozenset((await s.scalars(visible_inbox_ids(agent_id))).all())


async def inbox_members(s: AsyncSession, inbox_id: int) -> dict[str, list[int]]:
    """The member agent ids and team ids of one inbox (both empty: open to every agent)."""
    agents = (await s.scalars(select(InboxAgent.agent_id).where(InboxAgent.inbox_id == inbox_id)
                              .order_by(InboxAgent.agent_id))).all()
    teams = (await s.scalars(select(InboxTeam.team_id).where(InboxTeam.inbox_id == inbox_id)
                             .order_by(InboxTeam.team_id))).all()
    return {"agent_ids": list(agents), "team_ids": list(teams)}
