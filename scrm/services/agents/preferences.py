"""An agent's own settings: e-mail signature, saved ticket filters, notification choices."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from scrm.db.models import Inbox
from scrm.db.models_desk_ui import AgentPreference
from scrm.services.uow import Tx

SIGNATURE_CHANNELS = ("email",)  # chat channels carry no signature: it would repeat under every line
SIGNATURE_SEPARATOR = "\n\n-- \n"  # RFC 3676: mail clients fold what follows as a signature


class TicketFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str | None = Field(None, max_length=64)
    priority: str | None = Field(None, max_length=64)
    assignee: str | None = Field(None, max_length=32, description="me | none | an agent id")
    team_id: int | None = None
    sla: str | None = Field(None, max_length=16, description="breached | due_soon")
    q: str | None = Field(None, max_length=200)


class NotifySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sound: bool = False
    browser: bool = False


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signature: str | None = Field(None, max_length=2000)
    ticket_filters: TicketFilters | None = None
    notify: NotifySettings | None = None


def preferences_json(row: AgentPreference | None) -> dict[str, Any]:
    """The preferences as the API answers them (defaults when never saved)."""
    return {"signature": row.signature if row else None,
            "ticket_filters": TicketFilters.model_validate((row.ticket_filters if row else None) or {}).model_dump(),
            "notify": NotifySettings.model_validate((row.notify if row else None) or {}).model_dump()}


async def save(tx: Tx, agent_id: int, body: PreferencesIn) -> AgentPreference:
    """Store the fields given; fields left out keep their value."""
    row = await tx.session.get(AgentPreference, agent_id, with_for_update=True)
    if row is None:
        row = AgentPreference(agent_id=agent_id, ticket_filters={}, notify={})
        tx.session.add(row)
    given = body.model_fields_set
    if "signature" in given:
        row.signature = (body.signature or "").strip() or None
    if "ticket_filters" in given:
        row.ticket_filters = body.ticket_filters.model_dump(exclude_none=True) if body.ticket_filters else {}
    if "notify" in given:
        row.notify = body.notify.model_dump() if body.notify else {}
    await tx.session.flush()
    return row


async def with_signature(tx: Tx, agent_id: int | None, inbox: Inbox, text: str | None) -> str | None:
    """The agent's reply with their signature appended, on channels that carry one (e-mail)."""
    if agent_id is None or inbox.channel_type not in SIGNATURE_CHANNELS:
        return text
    row = await tx.session.get(AgentPreference, agent_id)
    if row is None or not row.signature:
        return text
    if text and text.rstrip().endswith(row.signature.strip()):
        return text  # the agent pasted it already
    return (text or "").rstrip() + SIGNATURE_SEPARATOR + row.signature
