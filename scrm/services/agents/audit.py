"""The audit log of agent actions."""

from __future__ import annotations

from typing import Any

from scrm.db.models import AuditLog, utcnow
from scrm.services.outbox import batch_rows
from scrm.services.uow import Tx


def record(tx: Tx, agent_id: int | None, action: str, target_type: str, target_id: int | None, **data: Any) -> None:
    """Append an audit entry in the caller's transaction. In a consumer's batch on PostgreSQL (a bot handoff) it
    is a plain row inserted with the batch's other new rows (outbox.BatchRows), not an ORM object flushed on
    its own."""
    values = {"agent_id": agent_id, "action": action, "target_type": target_type, "target_id": target_id,
              "data": data, "created_at": utcnow()}
    rows = batch_rows(tx)
    if rows is not None:
        rows.add("audit_log", values)
        return
    tx.session.add(AuditLog(**values))
