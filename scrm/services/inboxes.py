"""Inboxes admins connect, change and disable (every change audited).

Settings are validated by the caller against the channel's schema (`validate_inbox_config`, which
needs the channel registry); this module only stores what passed, so it imports no channel code."""

from __future__ import annotations

from typing import Any

from scrm.db.models import Inbox
from scrm.services.agents import audit
from scrm.services.uow import Tx


async def create(tx: Tx, by: int | None, *, name: str, channel_type: str, settings: dict[str, Any],
                 secrets: dict[str, Any], reopen_policy: str) -> Inbox:
    """Store a new, active inbox."""
    inbox = Inbox(name=name, channel_type=channel_type, settings=settings, secrets=secrets,
                  reopen_policy=reopen_policy, active=True)
    tx.session.add(inbox)
    await tx.session.flush()
    audit.record(tx, by, "inbox.create", "inbox", inbox.id, channel_type=channel_type)
    return inbox


async def lock(tx: Tx, inbox_id: int) -> Inbox | None:
    """The inbox, locked for an update (None when missing)."""
    return await tx.session.get(Inbox, inbox_id, with_for_update=True)


def update(tx: Tx, by: int | None, inbox: Inbox, *, settings: dict[str, Any], secrets: dict[str, Any],
           changes: dict[str, Any], fields: list[str]) -> None:
    """Apply validated settings/secrets and the given name, reopen_policy or active (None = unchanged)."""
    inbox.settings, inbox.secrets = settings, secrets
    for name in ("name", "reopen_policy", "active"):
        if changes.get(name) is not None:
            setattr(inbox, name, changes[name])
    audit.record(tx, by, "inbox.update", "inbox", inbox.id, fields=fields)


async def disable(tx: Tx, by: int | None, inbox_id: int) -> bool:
    """Stop an inbox (its history is kept); False when missing."""
    inbox = await tx.session.get(Inbox, inbox_id)
    if inbox is None:
        return False
    inbox.active = False
    audit.record(tx, by, "inbox.disable", "inbox", inbox.id)
    return True
