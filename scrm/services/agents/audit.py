"""The audit log of agent actions."""

from __future__ import annotations

from typing import Any

from scrm.db.models import AuditLog
from scrm.services.uow import Tx


def record(tx: Tx, agent_id: int | None, action: str, target_type: str, target_id: int | None, **data: Any) -> None:
    """Append an audit entry in the caller's transaction."""
    tx.session.add(AuditLog(agent_id=agent_id, action=action, target_type=target_type, target_id=target_id, data=data))
