"""Canned responses admins manage: create, edit, delete, each audited.

A duplicate shortcut raises the database's IntegrityError; the API answers it with 409."""

from __future__ import annotations

from typing import Any

from scrm.db.models_ui import CannedResponse
from scrm.services.agents import audit
from scrm.services.uow import Tx


async def create(tx: Tx, agent_id: int | None, shortcut: str, title: str, text: str) -> CannedResponse:
    """Add a canned response."""
    row = CannedResponse(shortcut=shortcut, title=title, text=text, created_by=agent_id)
    tx.session.add(row)
    await tx.session.flush()
    audit.record(tx, agent_id, "canned.create", "canned_response", row.id)
    return row


async def update(tx: Tx, agent_id: int | None, canned_id: int, changes: dict[str, Any]) -> CannedResponse | None:
    """Apply the given fields (None values are left as they are); None when there is no such row."""
    row = await tx.session.get(CannedResponse, canned_id)
    if row is None:
        return None
    for name, value in changes.items():
        if value is not None and name in ("shortcut", "title", "text"):
            setattr(row, name, value)
    await tx.session.flush()
    audit.record(tx, agent_id, "canned.update", "canned_response", canned_id)
    return row


async def delete(tx: Tx, agent_id: int | None, canned_id: int) -> bool:
    """Remove a canned response; False when there is no such row."""
    row = await tx.session.get(CannedResponse, canned_id)
    if row is None:
        return False
    await tx.session.delete(row)
    audit.record(tx, agent_id, "canned.delete", "canned_response", canned_id)
    return True
